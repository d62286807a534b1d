"""``monitor download-model``: fetch Qwen2.5-VL from ModelScope and check what arrived.

The download is the seed's command, ``modelscope download --model Qwen/Qwen2.5-VL-7B-Instruct
--local_dir DIR``, run as a subprocess: ModelScope is not a dependency of the daemon (install
it with ``pip install modelscope`` where the download runs). What arrived is then checked
without loading the model:

- ``config.json`` parses; the tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``,
  plus ``tokenizer_config.json``), ``preprocessor_config.json`` and a chat template are there;
- every shard named in ``model.safetensors.index.json`` exists, is non-empty, its safetensors
  header parses and the file is exactly as long as the header says (a cut-off download fails
  here), every tensor of the index's ``weight_map`` is in the shard it names, and the shards'
  tensor bytes add up to the index's ``metadata.total_size``;
- optionally, SHA-256 sums from a ``sha256sum``-format file.

Errors::

    ModelDownloadError       (the download could not run: no modelscope, it failed)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KNOWN_MODELS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
"""The models the seed names; others are allowed with a note."""

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
MODELS_ROOT = Path("/var/lib/vllm/models")
"""Where the vLLM unit's example settings expect models (``SERVE_MODEL``)."""

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024
"""safetensors refuses headers above 100 MB; a larger length means a corrupt file."""

EX_OK = 0
EX_VERIFY_FAILED = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
"""sysexits.h: modelscope is not installed."""

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


class ModelDownloadError(Exception):
    """The download could not be run or did not succeed."""


@dataclass
class VerifyReport:
    """What the check of a model directory found: problems fail it, notes do not."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0
    tensor_bytes: int = 0
    hashed_files: int = 0

    @property
    def ok(self) -> bool:
        """Whether the directory holds a complete model."""
        return not self.problems


def default_local_dir(model: str) -> Path:
    """``/var/lib/vllm/models/<name>``: the directory the vLLM env file points at."""
    return MODELS_ROOT / model.rsplit("/", 1)[-1]


def find_modelscope() -> str | None:
    """The ``modelscope`` command: next to this Python (same virtualenv) first, then PATH."""
    beside = Path(sys.executable).parent / "modelscope"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("modelscope")


def download_command(executable: str, model: str, local_dir: Path,
                     revision: str | None = None) -> list[str]:
    """The seed's download command line."""
    command = [executable, "download", "--model", model, "--local_dir", str(local_dir)]
    if revision:
        command += ["--revision", revision]
    return command


def run_download(command: Sequence[str]) -> None:
    """Run ``command`` with its output on the terminal (ModelScope shows progress bars).

    Raises:
        ModelDownloadError: it exited non-zero or could not start.
    """
    try:
        # The command is built from validated arguments and run without a shell.
        completed = subprocess.run(command, check=False)  # noqa: S603
    except OSError as exc:
        raise ModelDownloadError(f"cannot run {command[0]}: {exc.strerror}") from exc
    if completed.returncode != 0:
        raise ModelDownloadError(f"modelscope download exited with status "
                                 f"{completed.returncode}")


def _read_json(path: Path, report: VerifyReport) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.problems.append(f"{path.name}: missing")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.problems.append(f"{path.name}: unreadable or not JSON ({exc})")
    return None


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the length the file must have.

    A safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping each
    tensor name to its dtype, shape and ``data_offsets`` [begin, end) into the data that
    follows; so the file ends exactly at ``8 + N + max(end)``.

    Raises:
        ValueError: not a safetensors file.
    """
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > SAFETENSORS_HEADER_MAX:
            raise ValueError(f"header length {length} is not plausible")
        raw = stream.read(length)
    if len(raw) < length:
        raise ValueError("cut off inside its header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        # A malformed file, not a caller passing the wrong type.
        raise ValueError("header is not a JSON object")  # noqa: TRY004
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(value, int) for value in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name!r} has no valid data_offsets")
        data_end = max(data_end, offsets[1])
    return header, 8 + length + data_end


def _check_shard(path: Path, report: VerifyReport) -> set[str] | None:
    """Checks one weights file; returns its tensor names, or None when it is unusable."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        report.problems.append(f"{path.name}: missing")
        return None
    if size == 0:
        report.problems.append(f"{path.name}: empty")
        return None
    try:
        header, expected = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{path.name}: not a valid safetensors file ({exc})")
        return None
    if size != expected:
        report.problems.append(f"{path.name}: {size} bytes, its header describes {expected} "
                               "(incomplete or corrupt download)")
        return None
    names = {name for name in header if name != "__metadata__"}
    report.shards += 1
    report.tensor_bytes += _data_bytes(header)
    return names


def _data_bytes(header: dict[str, Any]) -> int:
    """Bytes of tensor data a safetensors header describes (what ``total_size`` counts)."""
    return sum(info["data_offsets"][1] - info["data_offsets"][0]
               for name, info in header.items() if name != "__metadata__")


def _check_weights(directory: Path, report: VerifyReport) -> None:
    index_path = directory / INDEX_FILE
    if not index_path.exists():
        single = directory / SINGLE_FILE
        if single.exists():
            _check_shard(single, report)
        else:
            report.problems.append(f"no weights: neither {INDEX_FILE} nor {SINGLE_FILE}")
        return
    index = _read_json(index_path, report)
    if index is None:
        return
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        report.problems.append(f"{INDEX_FILE}: no weight_map")
        return
    shard_names = sorted({str(shard) for shard in weight_map.values()})
    found: dict[str, set[str]] = {}
    for shard in shard_names:
        if Path(shard).name != shard:
            report.problems.append(f"{INDEX_FILE}: shard name {shard!r} is not a plain file name")
            continue
        names = _check_shard(directory / shard, report)
        if names is not None:
            found[shard] = names
    missing_tensors = [tensor for tensor, shard in weight_map.items()
                       if shard in found and tensor not in found[shard]]
    if missing_tensors:
        report.problems.append(f"{len(missing_tensors)} tensor(s) of {INDEX_FILE} are not in "
                               f"the shard it names, e.g. {missing_tensors[0]!r}")
    metadata = index.get("metadata") if isinstance(index, dict) else None
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if total is None:
        report.notes.append(f"{INDEX_FILE} has no metadata.total_size; sizes not compared")
    elif len(found) == len(shard_names):
        try:
            expected_total = int(total)
        except (TypeError, ValueError):
            report.problems.append(f"{INDEX_FILE}: metadata.total_size {total!r} is not a number")
            return
        if report.tensor_bytes < expected_total:
            report.problems.append(f"shards hold {report.tensor_bytes} bytes of tensors, "
                                   f"{INDEX_FILE} says {expected_total}")
        elif report.tensor_bytes > expected_total:
            # Some exporters count shared tensors once; more data than promised is not a
            # broken download.
            report.notes.append(f"shards hold {report.tensor_bytes} bytes of tensors, more than "
                                f"the index's total_size {expected_total}")


def _check_processor_files(directory: Path, report: VerifyReport) -> None:
    _read_json(directory / "config.json", report)
    tokenizer_config = _read_json(directory / "tokenizer_config.json", report)
    if not (directory / "tokenizer.json").is_file() and not (
            (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()):
        report.problems.append("tokenizer: neither tokenizer.json nor vocab.json + merges.txt")
    _read_json(directory / "preprocessor_config.json", report)
    has_template = ((directory / "chat_template.json").is_file()
                    or (directory / "chat_template.jinja").is_file()
                    or (isinstance(tokenizer_config, dict)
                        and bool(tokenizer_config.get("chat_template"))))
    if not has_template:
        report.problems.append("no chat template (chat_template.json, chat_template.jinja or "
                               "tokenizer_config.json's chat_template): vLLM's chat API needs it")


def parse_sha256_file(text: str) -> list[tuple[str, str]]:
    """``(hex digest, relative path)`` pairs from ``sha256sum`` output.

    Raises:
        ValueError: a line is not ``<64 hex digits>  <path>``.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SHA256_LINE.match(line.strip())
        if match is None:
            raise ValueError(f"line {number}: expected '<sha256>  <file>', got {line[:80]!r}")
        entries.append((match.group(1).lower(), match.group(2)))
    return entries


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (shards are several GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _check_checksums(directory: Path, checksum_file: Path, report: VerifyReport) -> None:
    try:
        entries = parse_sha256_file(checksum_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(f"checksum file {checksum_file}: cannot read ({exc})")
        return
    except ValueError as exc:
        report.problems.append(f"checksum file {checksum_file}: {exc}")
        return
    if not entries:
        report.problems.append(f"checksum file {checksum_file}: no entries")
        return
    root = directory.resolve()
    for expected, name in entries:
        path = (directory / name).resolve()
        if not path.is_relative_to(root):
            report.problems.append(f"checksum file names {name!r}, outside the model directory")
            continue
        try:
            actual = sha256_of(path)
        except FileNotFoundError:
            report.problems.append(f"{name}: missing (listed in {checksum_file.name})")
            continue
        except OSError as exc:
            report.problems.append(f"{name}: cannot read ({exc.strerror})")
            continue
        if actual != expected:
            report.problems.append(f"{name}: SHA-256 {actual} does not match {expected}")
        else:
            report.hashed_files += 1


def verify_model_dir(directory: Path, checksum_file: Path | None = None) -> VerifyReport:
    """Check that ``directory`` holds a complete Qwen2.5-VL checkpoint (see module docstring)."""
    report = VerifyReport(directory)
    if not directory.is_dir():
        report.problems.append(f"{directory}: not a directory")
        return report
    _check_processor_files(directory, report)
    _check_weights(directory, report)
    if checksum_file is not None:
        _check_checksums(directory, checksum_file, report)
    return report


def print_report(report: VerifyReport) -> None:
    """One line per problem and note, then a summary line."""
    for problem in report.problems:
        print(f"problem: {problem}")
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        hashed = f", {report.hashed_files} file(s) match their SHA-256" \
            if report.hashed_files else ""
        print(f"{report.directory}: complete: {report.shards} shard(s), "
              f"{report.tensor_bytes} bytes of tensors{hashed}")
    else:
        print(f"{report.directory}: INCOMPLETE ({len(report.problems)} problem(s)); "
              "run the download again (it resumes) or remove the directory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``monitor download-model``."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"ModelScope model id (default {DEFAULT_MODEL}; the smaller "
                        "Qwen/Qwen2.5-VL-3B-Instruct also works)")
    parser.add_argument("--local-dir", type=Path,
                        help=f"download directory (default {MODELS_ROOT}/<model name>)")
    parser.add_argument("--revision", help="model revision (branch, tag or commit)")
    parser.add_argument("--sha256", type=Path, metavar="FILE",
                        help="also check files against SHA-256 sums in sha256sum format "
                        "(paths relative to the model directory)")
    parser.add_argument("--verify-only", action="store_true",
                        help="do not download; only check the directory")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be done, and do nothing")


def main(args: argparse.Namespace) -> int:
    """Run ``monitor download-model`` with parsed ``args``; returns the exit status."""
    model: str = args.model
    if not _MODEL_ID.match(model):
        print(f"download-model: --model must look like Owner/Name, got {model!r}",
              file=sys.stderr)
        return EX_USAGE
    local_dir: Path = args.local_dir or default_local_dir(model)
    checksum_file: Path | None = args.sha256
    if model not in KNOWN_MODELS:
        print(f"note: {model} is not one of the tested models ({', '.join(KNOWN_MODELS)})",
              file=sys.stderr)
    executable = find_modelscope()
    checks = ("config.json, tokenizer, preprocessor_config.json, chat template, every shard "
              f"of {INDEX_FILE} (present, complete, total_size)")
    if checksum_file is not None:
        checks += f", SHA-256 sums from {checksum_file}"
    if args.dry_run:
        if not args.verify_only:
            command = download_command(executable or "modelscope", model, local_dir,
                                       args.revision)
            print("would run: " + " ".join(command))
            if executable is None:
                print("note: modelscope is not installed here: pip install modelscope")
        print(f"would check {local_dir}: {checks}")
        return EX_OK
    if not args.verify_only:
        if executable is None:
            print("download-model: the modelscope command is not installed; install it with "
                  f"`{Path(sys.executable).parent / 'pip'} install modelscope` "
                  "(or pip install modelscope in any environment) and run this again",
                  file=sys.stderr)
            return EX_UNAVAILABLE
        command = download_command(executable, model, local_dir, args.revision)
        print("running: " + " ".join(command), flush=True)
        try:
            run_download(command)
        except ModelDownloadError as exc:
            print(f"download-model: {exc}", file=sys.stderr)
            return EX_UNAVAILABLE
    report = verify_model_dir(local_dir, checksum_file)
    print_report(report)
    return EX_OK if report.ok else EX_VERIFY_FAILED
