"""Screenshot of the operator console from `monitor demo` (docs/console.png).

Runs the demo, logs in with the token it prints, waits for the fire alert and saves the
cameras grid as seen by headless chromium: ``python scripts/console_screenshot.py [OUT]``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png")
    demo = subprocess.Popen([sys.executable, "-m", "monitor", "demo", "--duration", "60"],
                            stdout=subprocess.PIPE, text=True)
    assert demo.stdout is not None  # noqa: S101 - piped above
    try:
        for line in demo.stdout:
            found = re.search(r"operator console: (\S+) \(log in with token (\S+)\)", line)
            if found:
                url, token = found.groups()
                break
        else:
            return 1
        # Keep reading the demo's lines, or it blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in demo.stdout or ()], daemon=True).start()
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--window-size=1200,760",
                         "--hide-scrollbars"):
            options.add_argument(argument)
        chrome = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            chrome.get(url + "login")
            chrome.find_element(By.NAME, "token").send_keys(token)
            chrome.find_element(By.CSS_SELECTOR, "form.login button").click()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                tiles = chrome.find_elements(By.CSS_SELECTOR, ".tile.alarm")
                if len(tiles) == 2:  # the fire and the missing hard hat
                    break
                time.sleep(0.2)
            time.sleep(1.5)
            chrome.save_screenshot(str(out))
        finally:
            chrome.quit()
    finally:
        demo.terminate()
        demo.wait(10)
    print(out)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
