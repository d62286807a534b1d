"""``monitor download-model``: argument handling, dry run, and the check of what arrived.

ModelScope cannot be reached here, so the model is a fake directory with the layout of a
Qwen2.5-VL checkpoint (real safetensors headers, tiny tensors), and the download itself is a
stand-in ``modelscope`` script that writes that directory where ``--local_dir`` points.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import pytest

from monitor.tools import cli, modeldl

SHARDS = {
    "model-00001-of-00002.safetensors": {"visual.patch_embed.weight": 48, "lm_head.weight": 16},
    "model-00002-of-00002.safetensors": {"model.embed_tokens.weight": 32},
}
"""Shard file → tensor name → number of float16 values."""


def write_safetensors(path: Path, tensors: dict[str, int]) -> int:
    """Write a valid safetensors file of float16 tensors; returns its tensor bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, count in tensors.items():
        header[name] = {"dtype": "F16", "shape": [count], "data_offsets": [offset,
                                                                         offset + 2 * count]}
        offset += 2 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(256)) * (offset // 256)
                     + bytes(offset % 256))
    return offset


def make_model(directory: Path) -> int:
    """A complete fake checkpoint in ``directory``; returns its tensor bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(
        {"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096}))
    (directory / "tokenizer.json").write_text("{}")
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Qwen2VLImageProcessor", "max_pixels": 12845056}))
    total = 0
    weight_map = {}
    for shard, tensors in SHARDS.items():
        total += write_safetensors(directory / shard, tensors)
        weight_map.update(dict.fromkeys(tensors, shard))
    (directory / modeldl.INDEX_FILE).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A complete fake Qwen2.5-VL checkpoint."""
    directory = tmp_path / "Qwen2.5-VL-7B-Instruct"
    make_model(directory)
    return directory


def test_complete_model_passes(model_dir: Path) -> None:
    report = modeldl.verify_model_dir(model_dir)
    assert report.problems == []
    assert report.ok
    assert report.shards == 2
    assert report.tensor_bytes == 2 * (48 + 16 + 32)


def test_missing_shard_is_named(model_dir: Path) -> None:
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    report = modeldl.verify_model_dir(model_dir)
    assert not report.ok
    assert report.problems == ["model-00002-of-00002.safetensors: missing"]


def test_cut_off_shard_is_incomplete(model_dir: Path) -> None:
    shard = model_dir / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    report = modeldl.verify_model_dir(model_dir)
    assert len(report.problems) == 1
    assert "incomplete or corrupt download" in report.problems[0]


def test_empty_and_garbage_shards(model_dir: Path) -> None:
    (model_dir / "model-00001-of-00002.safetensors").write_bytes(b"")
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(b"<html>error page</html>")
    problems = modeldl.verify_model_dir(model_dir).problems
    assert problems[0] == "model-00001-of-00002.safetensors: empty"
    assert "model-00002-of-00002.safetensors: not a valid safetensors file" in problems[1]


def test_total_size_must_be_covered(model_dir: Path) -> None:
    index_path = model_dir / modeldl.INDEX_FILE
    index = json.loads(index_path.read_text())
    index["metadata"]["total_size"] += 2
    index_path.write_text(json.dumps(index))
    problems = modeldl.verify_model_dir(model_dir).problems
    assert problems == [f"shards hold 192 bytes of tensors, {modeldl.INDEX_FILE} says 194"]
    # More data than the index promises is only a note (exporters differ on shared tensors).
    index["metadata"]["total_size"] -= 4
    index_path.write_text(json.dumps(index))
    report = modeldl.verify_model_dir(model_dir)
    assert report.ok
    assert "more than the index's total_size 190" in report.notes[0]


def test_index_tensor_absent_from_its_shard(model_dir: Path) -> None:
    index_path = model_dir / modeldl.INDEX_FILE
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    problems = modeldl.verify_model_dir(model_dir).problems
    assert len(problems) == 1
    assert "'model.norm.weight'" in problems[0]


def test_processor_files_and_chat_template_required(model_dir: Path) -> None:
    for name in ("preprocessor_config.json", "tokenizer.json", "chat_template.json"):
        (model_dir / name).unlink()
    (model_dir / "config.json").write_text("{not json")
    problems = modeldl.verify_model_dir(model_dir).problems
    assert problems[0].startswith("config.json: unreadable or not JSON")
    assert problems[1:] == [
        "tokenizer: neither tokenizer.json nor vocab.json + merges.txt",
        "preprocessor_config.json: missing",
        ("no chat template (chat_template.json, chat_template.jinja or tokenizer_config.json's "
        "chat_template): vLLM's chat API needs it"),
    ]


def test_single_file_model_without_index(tmp_path: Path) -> None:
    directory = tmp_path / "small"
    make_model(directory)
    for shard in SHARDS:
        (directory / shard).unlink()
    (directory / modeldl.INDEX_FILE).unlink()
    assert modeldl.verify_model_dir(directory).problems == [
        "no weights: neither model.safetensors.index.json nor model.safetensors"]
    write_safetensors(directory / "model.safetensors", {"w": 8})
    assert modeldl.verify_model_dir(directory).ok


def test_sha256_file(model_dir: Path, tmp_path: Path) -> None:
    shard = "model-00001-of-00002.safetensors"
    good = hashlib.sha256((model_dir / shard).read_bytes()).hexdigest()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# from the model card\n{good}  {shard}\n{good} *config.json\n"
                    f"{'0' * 64}  absent.bin\n{good}  ../outside\n")
    report = modeldl.verify_model_dir(model_dir, sums)
    assert report.hashed_files == 1
    assert report.problems[0].startswith("config.json: SHA-256 ")
    assert report.problems[1:] == ["absent.bin: missing (listed in SHA256SUMS)",
                                   ("checksum file names '../outside', outside the model "
                                   "directory")]
    sums.write_text("not a checksum line\n")
    assert modeldl.verify_model_dir(model_dir, sums).problems == [
        (f"checksum file {sums}: line 1: expected '<sha256>  <file>', "
        "got 'not a checksum line'")]


def test_dry_run_prints_the_seed_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeldl, "find_modelscope", lambda: None)
    target = tmp_path / "models" / "3b"
    code = cli.main(["download-model", "--model", "Qwen/Qwen2.5-VL-3B-Instruct",
                     "--local-dir", str(target), "--sha256", str(tmp_path / "sums"),
                     "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == ("would run: modelscope download --model Qwen/Qwen2.5-VL-3B-Instruct "
                      f"--local_dir {target}")
    assert out[1] == "note: modelscope is not installed here: pip install modelscope"
    assert out[2].startswith(f"would check {target}: config.json, ")
    assert out[2].endswith(f"SHA-256 sums from {tmp_path / 'sums'}")
    assert not target.exists()


def test_defaults_and_bad_model_id(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["download-model", "--dry-run", "--verify-only"])
    assert code == 0
    assert capsys.readouterr().out == (
        "would check /var/lib/vllm/models/Qwen2.5-VL-7B-Instruct: config.json, tokenizer, "
        "preprocessor_config.json, chat template, every shard of model.safetensors.index.json "
        "(present, complete, total_size)\n")
    assert cli.main(["download-model", "--model", "no-slash", "--dry-run"]) == 2
    assert "--model must look like Owner/Name" in capsys.readouterr().err


def test_missing_modelscope_says_how_to_install(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeldl, "find_modelscope", lambda: None)
    code = cli.main(["download-model", "--local-dir", str(tmp_path / "m")])
    assert code == modeldl.EX_UNAVAILABLE
    assert "pip install modelscope" in capsys.readouterr().err


FAKE_MODELSCOPE = """#!{python}
# Stand-in for `modelscope download`: checks its arguments like the real CLI would be called,
# then writes a checkpoint (complete, or with its last shard cut off).
import sys
sys.path.insert(0, {tests!r})
from test_modeldl import make_model
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "download", args
model = args[args.index("--model") + 1]
target = Path(args[args.index("--local_dir") + 1])
assert model == "Qwen/Qwen2.5-VL-7B-Instruct", model
make_model(target)
if {truncate}:
    shard = target / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
"""


@pytest.mark.parametrize(("truncate", "expected_code"), [(False, 0), (True, 1)])
def test_download_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch, truncate: bool,
                              expected_code: int) -> None:
    fake = tmp_path / "bin" / "modelscope"
    fake.parent.mkdir()
    fake.write_text(FAKE_MODELSCOPE.format(python=sys.executable,
                                           tests=str(Path(__file__).parent),
                                           truncate=truncate))
    fake.chmod(0o755)
    monkeypatch.setattr(modeldl, "find_modelscope", lambda: str(fake))
    target = tmp_path / "models" / "Qwen2.5-VL-7B-Instruct"
    code = cli.main(["download-model", "--local-dir", str(target)])
    out = capsys.readouterr().out
    assert code == expected_code
    assert f"running: {fake} download --model Qwen/Qwen2.5-VL-7B-Instruct --local_dir {target}" \
        in out
    if truncate:
        assert "(incomplete or corrupt download)" in out
        assert f"{target}: INCOMPLETE (1 problem(s))" in out
    else:
        assert f"{target}: complete: 2 shard(s), 192 bytes of tensors" in out
    # Checking again later, without downloading, gives the same answer.
    assert cli.main(["download-model", "--local-dir", str(target), "--verify-only"]) \
        == expected_code


def test_failed_download_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "modelscope"
    fake.write_text("#!/bin/sh\necho 'network unreachable' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(modeldl, "find_modelscope", lambda: str(fake))
    assert cli.main(["download-model", "--local-dir", str(tmp_path / "m")]) == 69
    assert "modelscope download exited with status 3" in capsys.readouterr().err
