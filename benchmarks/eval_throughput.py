"""Multiple-choice scoring speed: `llmctl eval` against lm-evaluation-harness's HF backend.

    python benchmarks/eval_throughput.py                          # builds a small model, about two minutes on CPU
    python benchmarks/eval_throughput.py --items 400 --threads 2 --dim 256 --layers 4
    python benchmarks/eval_throughput.py --device cuda --dim 768 --layers 12 --items 1000

One model, trained for a few steps on examples/data/instructions.jsonl, is scored two ways on the
same items (contexts from the data, four choices each): llmctl's own scorer on the checkpoint, and
lm-eval's HF backend on the same checkpoint exported with `llmctl export` (float32, the same prompt
prefix added by the exported tokenizer). Both run on the same device and threads, after the model is
loaded; lm-eval's time includes building its task from a local JSONL (a fraction of a second).
Prints items/s for each and the ratio. Needs the dev extra lm_eval[hf].
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def build_checkpoint(tmp: Path, args: argparse.Namespace) -> tuple[Path, list[str]]:
    """A byte-level BPE, pretraining shards and a briefly trained model, all under tmp."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmctl.config import load_config
    from llmctl.engine.pretrain import run_pretrain
    from llmctl.tokenizer.chat import BASE_SPECIALS
    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    rows = [
        json.loads(line)["messages"]
        for line in (ROOT / "examples/data/instructions.jsonl").read_text().splitlines()
    ]
    texts = ["\n".join(m["content"] for m in conv) for conv in rows]
    (tmp / "raw" / "train").mkdir(parents=True)
    (tmp / "raw" / "validation").mkdir(parents=True)
    pq.write_table(pa.table({"text": texts}), tmp / "raw" / "train" / "part-00000.parquet")
    pq.write_table(pa.table({"text": texts[:50]}), tmp / "raw" / "validation" / "part-00000.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=BASE_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(tmp / "tokenizer.json"))
    tokenize(TokenizeOptions(data=tmp / "raw", tokenizer=tmp / "tokenizer.json", out=tmp / "tokens"))
    heads = max(1, args.dim // 64)
    overrides = {
        "model.dim": args.dim,
        "model.n_layers": args.layers,
        "model.n_heads": heads,
        "model.n_kv_heads": heads,
        "model.max_seq_len": 256,
        "data.path": str(tmp / "tokens"),
        "data.seq_len": 128,
        "train.steps": 5,
        "train.micro_batch_size": 8,
        "train.out_dir": str(tmp / "runs"),
        "train.name": "bench",
        "train.eval_every": 0,
        "train.sample_every": 0,
        "checkpoint.every": 0,
        "train.device": args.device,
        "telemetry.tensorboard": False,
        "telemetry.panel": "off",
        "telemetry.enabled": False,
    }
    run_pretrain(load_config(None, overrides))
    return tmp / "runs" / "bench" / "checkpoints" / "latest", texts


def make_items(texts: list[str], n: int) -> list[dict[str, object]]:
    """Context: a conversation's first line; choices: its second line and those of three others."""
    pairs = [t.split("\n", 1) for t in texts if "\n" in t]
    items = []
    for i in range(n):
        head, tail = pairs[i % len(pairs)]
        others = [pairs[(i * 7 + k * 13 + 1) % len(pairs)][1] for k in range(3)]
        label = i % 4
        items.append(
            {
                "context": head + "\n",
                "choices": [*others[:label], tail, *others[label:]],
                "label": label,
                "id": i,
            }
        )
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lm-eval-batch", type=int, default=32, help="lm-eval's --batch_size")
    args = parser.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from llmctl.cli.app import app
    from llmctl.eval.choice import score_choices
    from llmctl.eval.model_io import open_model, prompt_prefix
    from llmctl.eval.tasks import read_items

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt, texts = build_checkpoint(tmp, args)
        items = make_items(texts, args.items)
        task = tmp / "bench.jsonl"
        task.write_text("".join(json.dumps(i) + "\n" for i in items))

        loaded = open_model(str(ckpt), args.device)
        _, parsed = read_items(task)
        score_choices(loaded, parsed[:8])  # warm-up
        start = time.perf_counter()
        ours = score_choices(loaded, parsed)
        ours_s = time.perf_counter() - start

        from typer.testing import CliRunner

        hf_dir = tmp / "hf"
        CliRunner().invoke(app, ["export", str(ckpt), "--out", str(hf_dir), "--dtype", "float32"])
        (prefix_id,) = prompt_prefix(loaded)
        token = loaded.tokenizer.id_to_token(prefix_id)
        data = json.loads((hf_dir / "tokenizer.json").read_text())
        data["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": token, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": token, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {token: {"id": token, "ids": [prefix_id], "tokens": [token]}},
        }
        (hf_dir / "tokenizer.json").write_text(json.dumps(data))
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / "bench.yaml").write_text(
            f"task: llmctl_bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {task}\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
            "doc_to_choice: '{{choices}}'\ndoc_to_target: label\ntarget_delimiter: \"\"\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )
        lm = HFLM(pretrained=str(hf_dir), device=args.device, batch_size=args.lm_eval_batch, dtype="float32")
        manager = TaskManager(include_path=str(tmp / "tasks"))
        start = time.perf_counter()
        theirs = simple_evaluate(model=lm, tasks=["llmctl_bench"], task_manager=manager)
        theirs_s = time.perf_counter() - start
        acc_theirs = theirs["results"]["llmctl_bench"]["acc,none"]

    n = len(items)
    print(
        f"{n} items x 4 choices, model dim {args.dim} x {args.layers} layers, {args.device}, {args.threads} threads"
    )
    print(f"llmctl eval:           {n / ours_s:8.1f} items/s  ({ours_s:.2f} s, acc {ours.acc:.4f})")
    print(
        f"lm-eval HF backend:    {n / theirs_s:8.1f} items/s  ({theirs_s:.2f} s, acc {acc_theirs:.4f}, batch {args.lm_eval_batch})"
    )
    print(f"ratio llmctl / lm-eval: {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
