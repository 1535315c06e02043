"""The bookkeeping of a token directory: what each split was planned from, and meta.json.

`DIR/<split>/plan.json` is written before any shard of the split: the raw parts, the shards' row
ranges and the settings (tokenizer fingerprint, mode, dtype, separator, chat profile). Every later run,
and every job of a split-up run, must agree with it; `merge` checks each planned shard is complete
and writes `DIR/meta.json` from the shards' own records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmctl import __version__
from llmctl.errors import LlmctlError
from llmctl.tokenizer.chat import get_profile
from llmctl.tokenizer.core import Tokenizer
from llmctl.tokens.plan import ShardPlan, source_identity
from llmctl.tokens.shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_JSON,
    PLAN_JSON,
    read_shard_record,
    shard_name,
    write_json_atomic,
)
from llmctl.tokens.workers import SEPARATORS, EncodePolicy


def _template_record(policy: EncodePolicy) -> dict[str, Any] | None:
    """profile 'model' (`--template model`): the template itself, so SFT and inspect render the same turns."""
    if policy.profile != "model" or policy.chat_template is None:
        return None
    return {"name": "model", "version": 1, **policy.chat_template}


def settings_of(tok: Tokenizer, policy: EncodePolicy, shard_bytes: int) -> dict[str, Any]:
    """Everything that decides the shards' bytes, as recorded in plan.json and meta.json."""
    chat = get_profile(policy.profile) if policy.profile and policy.profile != "model" else None
    sep_id = {"eos": policy.eos_id, "bos": policy.bos_id}.get(policy.separator)
    return {
        "tokenizer": {**tok.describe(), "path": str(Path(tok.path).resolve())},
        "mode": policy.mode,
        "dtype": policy.dtype,
        "column": policy.column,
        "chat_profile": {"name": chat.name, "version": chat.version} if chat else _template_record(policy),
        "separator": {
            "policy": policy.separator,
            "description": SEPARATORS[policy.separator],
            "token_id": sep_id,
        },
        "shard_bytes": shard_bytes,
    }


def settings_id(settings: dict[str, Any]) -> str:
    """A short hash of the settings; the tokenizer's path is left out (a moved file is the same tokenizer)."""
    comparable = {**settings, "tokenizer": {k: v for k, v in settings["tokenizer"].items() if k != "path"}}
    return hashlib.sha256(json.dumps(comparable, sort_keys=True).encode()).hexdigest()[:16]


def refuse_other_tokenizer(out: Path, fingerprint: str) -> None:
    """Raise when anything already in `out` was written with a tokenizer of another fingerprint."""
    recorded = []
    if (out / META_JSON).is_file():
        recorded.append((out / META_JSON, json.loads((out / META_JSON).read_text())["tokenizer"]))
    for plan in sorted(out.glob(f"*/{PLAN_JSON}")):
        recorded.append((plan, json.loads(plan.read_text())["settings"]["tokenizer"]))
    for path, tok in recorded:
        if tok["fingerprint"] != fingerprint:
            raise LlmctlError(
                f"{out} was tokenized with another tokenizer ({tok['path']}, fingerprint {tok['fingerprint'][:12]}), "
                f"recorded in {path.relative_to(out)}; this one's fingerprint is {fingerprint[:12]}",
                "use the same tokenizer file, or write to a new --out directory",
            )


def write_plan(out: Path, data: Path, split: str, settings: dict[str, Any], plans: list[ShardPlan]) -> None:
    """Record the split's plan, or check it equals the one already recorded."""
    plan_doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "split": split,
        "data": str(data.resolve()),
        "source": source_identity(data, split),
        "settings": settings,
        "settings_id": settings_id(settings),
        "shards": [{"name": shard_name(p.index), **p.source(), "rows_total": p.rows} for p in plans],
    }
    path = out / split / PLAN_JSON
    if path.is_file():
        old = json.loads(path.read_text())
        same = old.get("settings_id") == plan_doc["settings_id"] and old.get("shards") == plan_doc["shards"]
        if not same or old.get("source") != plan_doc["source"]:
            raise LlmctlError(
                f"{out}/{split} was written from other data or with other options than this run's",
                "rerun with the same --data and options, or write to a new --out directory",
            )
        return
    (out / split).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan_doc)


def merge(out: Path) -> dict[str, Any]:
    """Check every planned shard of every split is complete and write meta.json; returns it."""
    plan_paths = sorted(Path(out).glob(f"*/{PLAN_JSON}"))
    if not plan_paths:
        raise LlmctlError(
            f"{out} holds no tokenized split (no */{PLAN_JSON})",
            "run `llmctl tokenize --data RAW --tokenizer TOK --out DIR` first",
        )
    plans = [json.loads(p.read_text()) for p in plan_paths]
    order = {"train": 0, "validation": 1, "test": 2}
    plans.sort(key=lambda p: (order.get(p["split"], 3), p["split"]))
    first = plans[0]
    for plan in plans[1:]:
        if plan["settings_id"] != first["settings_id"]:
            raise LlmctlError(
                f"splits {first['split']} and {plan['split']} in {out} were tokenized with different options",
                "tokenize every split with the same tokenizer and options, or into separate --out directories",
            )
    settings = first["settings"]
    splits: dict[str, Any] = {}
    missing: list[str] = []
    for plan in plans:
        records = []
        for shard in plan["shards"]:
            record = read_shard_record(Path(out) / plan["split"], shard["name"], settings["dtype"])
            if record is None or record.get("settings_id") != plan["settings_id"]:
                missing.append(f"{plan['split']}/{shard['name']}")
                continue
            records.append({k: v for k, v in record.items() if k not in ("skipped_rows", "settings_id")})
        keys = (
            "tokens",
            "documents",
            "trained_tokens",
            "empty_skipped",
            "invalid_utf8_replaced",
            "text_bytes",
        )
        splits[plan["split"]] = {**{k: sum(r[k] for r in records) for k in keys}, "shards": records}
    if missing:
        raise LlmctlError(
            f"{len(missing)} shard(s) of {out} are not complete (first: {missing[0]})",
            "run the missing `llmctl tokenize ... --shard-index I --num-shards K` jobs (reruns skip complete shards), then --merge again",
        )
    totals = {k: sum(s[k] for s in splits.values()) for k in keys}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "llmctl_version": __version__,
        "mode": settings["mode"],
        "dtype": settings["dtype"],
        "vocab_size": settings["tokenizer"]["vocab_size"],
        "tokenizer": settings["tokenizer"],
        "chat_profile": settings["chat_profile"],
        "separator": settings["separator"],
        "column": settings["column"],
        "source": {"data": first["data"], "shard_bytes": settings["shard_bytes"]},
        "splits": splits,
        "totals": totals,
    }
    write_json_atomic(Path(out) / META_JSON, meta)
    return meta
