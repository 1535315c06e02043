"""Multiple-choice scoring speed: `llmctl eval` against lm-evaluation-harness's HF backend, same scores.

    python benchmarks/eval_throughput.py                          # builds a small model, a few minutes on CPU
    python benchmarks/eval_throughput.py --items 400 --threads 2 --dim 256 --layers 4 --num-fewshot 3
    python benchmarks/eval_throughput.py --device cuda --dim 768 --layers 12 --items 1000

One model, trained for a few steps on examples/data/instructions.jsonl, is scored two ways on the
same task: items of four choices after lm-eval's " " target delimiter (contexts `...\nAnswer:`), with
`--num-fewshot` solved examples (3 by default) drawn by lm-eval's seeded sampler (seed 1234) from a train
split. llmctl scores the task folder (items.jsonl + fewshot.jsonl) with its own scorer; lm-eval's HF backend
scores the same JSONL files (training_split: train) on the checkpoint exported with `llmctl export`
(float32, the same prompt prefix added by the exported tokenizer). Both run on the same device and threads,
after the model is loaded; each time includes building the few-shot contexts. acc and acc_norm must be
identical (the script stops otherwise). Prints items/s for each and the ratio. Needs the dev extra lm_eval[hf].
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


def make_items(texts: list[str], n: int, offset: int = 0) -> list[dict[str, object]]:
    """Context: a conversation's first line as a question; choices, after lm-eval's " " delimiter: its second
    line and those of three others."""
    pairs = [t.split("\n", 1) for t in texts if "\n" in t]
    items = []
    for i in range(offset, offset + n):
        head, tail = pairs[i % len(pairs)]
        others = [pairs[(i * 7 + k * 13 + 1) % len(pairs)][1] for k in range(3)]
        label = i % 4
        items.append(
            {
                "context": f"Question: {head}\nAnswer:",
                "target_delimiter": " ",
                "choices": [*others[:label], tail, *others[label:]],
                "label": label,
                "id": i,
            }
        )
    return items


def write_task(tmp: Path, texts: list[str], n: int) -> Path:
    """A task folder: n items and a 100-item few-shot pool from other conversations."""
    folder = tmp / "bench"
    folder.mkdir()
    for file, rows in (("items.jsonl", make_items(texts, n)), ("fewshot.jsonl", make_items(texts, 100, n))):
        (folder / file).write_text("".join(json.dumps(i) + "\n" for i in rows))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lm-eval-batch", type=int, default=32, help="lm-eval's --batch_size")
    parser.add_argument(
        "--num-fewshot",
        "--fewshot",
        dest="fewshot",
        type=int,
        default=3,
        help="solved examples before each item",
    )
    args = parser.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from llmctl.cli.app import app
    from llmctl.eval.choice import score_choices
    from llmctl.eval.fewshot import add_fewshot
    from llmctl.eval.load import load_task
    from llmctl.eval.model_io import open_model, prompt_prefix

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt, texts = build_checkpoint(tmp, args)
        folder = write_task(tmp, texts, args.items)
        task = load_task(str(folder))

        loaded = open_model(str(ckpt), args.device)
        score_choices(loaded, task.items[:8])  # warm-up
        start = time.perf_counter()
        items = add_fewshot(task.items, task.fewshot_pool(), k=args.fewshot, seed=1234)
        ours = score_choices(loaded, items)
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
            "task: llmctl_bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {folder / 'items.jsonl'}\n    train: {folder / 'fewshot.jsonl'}\n"
            "test_split: test\ntraining_split: train\noutput_type: multiple_choice\n"
            "doc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
            'target_delimiter: " "\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n'
        )
        lm = HFLM(pretrained=str(hf_dir), device=args.device, batch_size=args.lm_eval_batch, dtype="float32")
        manager = TaskManager(include_path=str(tmp / "tasks"))
        start = time.perf_counter()
        theirs = simple_evaluate(
            model=lm, tasks=["llmctl_bench"], task_manager=manager, num_fewshot=args.fewshot
        )
        theirs_s = time.perf_counter() - start
        result = theirs["results"]["llmctl_bench"]
        acc_theirs, norm_theirs = result["acc,none"], result["acc_norm,none"]

    n = len(items)
    print(
        f'{n} items x 4 choices, {args.fewshot}-shot, " " delimiter, model dim {args.dim} x {args.layers} layers, '
        f"{args.device}, {args.threads} threads"
    )
    print(
        f"llmctl eval:           {n / ours_s:8.1f} items/s  ({ours_s:.2f} s, acc {ours.acc:.4f}, acc_norm {ours.acc_norm:.4f})"
    )
    print(
        f"lm-eval HF backend:    {n / theirs_s:8.1f} items/s  ({theirs_s:.2f} s, acc {acc_theirs:.4f}, "
        f"acc_norm {norm_theirs:.4f}, batch {args.lm_eval_batch})"
    )
    print(f"ratio llmctl / lm-eval: {theirs_s / ours_s:.2f}x")
    assert (ours.acc, ours.acc_norm) == (acc_theirs, norm_theirs), "the two disagree: scores differ"
    print("scores identical: acc and acc_norm equal lm-eval's")


if __name__ == "__main__":
    main()
