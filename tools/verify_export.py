#!/usr/bin/env python3
"""Check a ReviewDesk audit export offline: python3 verify_export.py FILE MANIFEST

Standard library only (no ReviewDesk or Django needed). It checks that
  1. FILE's SHA-256 and row count are those the manifest states;
  2. every row's hash is SHA-256 over its prev_hash followed by the canonical JSON encoding
     (version 1) of its own fields, i.e. nobody changed the row after it was written;
  3. rows are in chain order (increasing seq, the chain position; exports with manifest version
     1 had no seq column and were in increasing id order) and, for an unfiltered export, each
     row's prev_hash is the previous row's hash and its seq the previous seq + 1 (nothing removed,
     inserted or reordered), starting from the genesis hash at seq 1 and ending at the chain head
     the manifest names;
  4. the first and last hash in the file are those the manifest states.
It prints one "OK ..." line and exits 0, or prints what failed, naming the first bad row by
line number and id, and exits 1. Exit 2: the files cannot be read or the manifest asks for an
encoding this tool does not know. See docs/COMPLIANCE.md.
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys

ENCODING_VERSION = 1
GENESIS_HASH = "0" * 64
# Manifest version 2 (the chain ordered by seq); version 1 files have no seq column.
COLUMNS = ("id", "seq", "created_at", "actor", "actor_id", "action", "object_type", "object_id",
           "workflow_version", "payload", "request_id", "ip", "prev_hash", "hash")
COLUMNS_V1 = tuple(c for c in COLUMNS if c != "seq")
HASHED = ("created_at", "actor", "actor_id", "action", "object_type", "object_id", "workflow_version",
          "payload", "request_id", "ip")


def canonical_json(value) -> str:
    """Encoding version 1: keys sorted, no spaces, UTF-8 characters kept as they are."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256((prev_hash + canonical_json({k: fields[k] for k in HASHED})).encode()).hexdigest()


class BadRow(Exception):
    def __init__(self, line: int, row_id, reason: str):
        super().__init__(f"line {line} (id {row_id}): {reason}")
        self.line, self.row_id, self.reason = line, row_id, reason


def _unneutralise(cell: str) -> str:
    # The exporter puts one ' before any cell starting with = + - @ TAB CR or ' (so that a
    # spreadsheet does not run it as a formula); removing it gives back the hashed value.
    return cell[1:] if cell.startswith("'") else cell


def _int_or_none(cell: str):
    return None if cell == "" else int(cell)


def csv_rows(path: str, columns: tuple[str, ...] = COLUMNS):
    """(line, fields) per record; line is where the record starts (a cell may span lines)."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != columns:
            raise BadRow(1, "-", f"header is not {','.join(columns)}")
        start = reader.line_num + 1
        for record in reader:
            line, start = start, reader.line_num + 1
            row_id = record[0] if record else "?"
            if len(record) != len(columns):
                raise BadRow(line, row_id, f"has {len(record)} cells, expected {len(columns)}")
            cells = dict(zip(columns, (_unneutralise(c) for c in record), strict=True))
            try:
                fields = {
                    **cells,
                    "id": int(cells["id"]),
                    **({"seq": int(cells["seq"])} if "seq" in columns else {}),
                    "actor_id": _int_or_none(cells["actor_id"]),
                    "workflow_version": _int_or_none(cells["workflow_version"]),
                    "ip": cells["ip"] or None,
                    "payload": json.loads(cells["payload"]),
                }
            except ValueError as exc:
                raise BadRow(line, row_id, f"cannot be read ({exc})") from None
            yield line, fields


def jsonl_rows(path: str, columns: tuple[str, ...] = COLUMNS):
    with open(path, encoding="utf-8", newline="") as handle:
        for line, text in enumerate(handle, start=1):
            try:
                fields = json.loads(text)
            except ValueError as exc:
                raise BadRow(line, "?", f"is not JSON ({exc})") from None
            if not isinstance(fields, dict) or set(fields) != set(columns):
                row_id = fields.get("id", "?") if isinstance(fields, dict) else "?"
                raise BadRow(line, row_id, f"does not have exactly the fields {', '.join(columns)}")
            yield line, fields


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str, manifest: dict) -> tuple[list[str], str]:
    """(failures, summary). No failures means the export is what the manifest says."""
    failures: list[str] = []
    digest = file_sha256(path)
    if digest != manifest.get("file_sha256"):
        failures.append(f"file SHA-256 is {digest}, the manifest says {manifest.get('file_sha256')}")
    unfiltered = not manifest.get("filtered", True)
    # Version 1: no seq column, the file in id order. Version 2: in seq order (the chain's).
    by_seq = manifest.get("manifest_version", 1) >= 2
    columns, key = (COLUMNS, "seq") if by_seq else (COLUMNS_V1, "id")
    rows = csv_rows(path, columns) if manifest.get("format") == "csv" else jsonl_rows(path, columns)
    count, first, last, prev_hash, prev_key = 0, None, None, None, None
    try:
        for line, fields in rows:
            row_id, order = fields["id"], fields[key]
            if not isinstance(order, int) or (prev_key is not None and order <= prev_key):
                raise BadRow(line, row_id, f"is out of {key} order (after {key} {prev_key})")
            expected_prev = (GENESIS_HASH if count == 0 else prev_hash) if unfiltered else fields["prev_hash"]
            if fields["prev_hash"] != expected_prev:
                raise BadRow(line, row_id, "prev_hash is not the previous row's hash (a row before it was "
                                           "removed, inserted or reordered)")
            if row_hash(fields["prev_hash"], fields) != fields["hash"]:
                raise BadRow(line, row_id, "hash does not match the row's contents (the row was changed)")
            if by_seq and unfiltered and order != (prev_key or 0) + 1:
                # seq is not hashed: checked after the links, which name a removal first.
                raise BadRow(line, row_id, f"has seq {order}, expected {(prev_key or 0) + 1} (a row before it "
                                           "was removed or inserted)")
            if first is None:
                first = fields["hash"]
            last, prev_hash, prev_key = fields["hash"], fields["hash"], order
            count += 1
    except BadRow as bad:
        failures.append(f"first bad row: {bad}")
        return failures, ""
    if count != manifest.get("row_count"):
        failures.append(f"{count} rows in the file, the manifest says {manifest.get('row_count')}")
    if first != manifest.get("first_hash"):
        failures.append(f"first hash is {first}, the manifest says {manifest.get('first_hash')}")
    if last != manifest.get("last_hash"):
        failures.append(f"last hash is {last}, the manifest says {manifest.get('last_hash')}")
    head = (manifest.get("chain_head") or {}).get("hash")
    if unfiltered and count and last != head:
        failures.append(f"an unfiltered export must end at the chain head {head}, it ends at {last}")
    scope = ("unfiltered: every row linked to the previous one from the genesis hash to the chain head"
             if unfiltered else "filtered: each row's hash checked on its own, links not checked")
    summary = (f"OK {path}: {count} rows, sha256 {digest}, {manifest.get('format')}, "
               f"ids {manifest.get('first_id')}-{manifest.get('last_id')}"
               + (f", seq {manifest.get('first_seq')}-{manifest.get('last_seq')}" if manifest.get('manifest_version', 1) >= 2 else "")
               + f", {scope}")
    return failures, summary


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: verify_export.py FILE MANIFEST", file=sys.stderr)
        return 2
    path, manifest_path = argv
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"ERROR: cannot read the manifest: {exc}", file=sys.stderr)
        return 2
    if manifest.get("manifest_version", 1) not in (1, 2):
        print(f"ERROR: this tool reads manifest versions 1 and 2; the manifest says {manifest.get('manifest_version')}",
              file=sys.stderr)
        return 2
    if manifest.get("hash_algorithm") != "sha256" or manifest.get("encoding_version") != ENCODING_VERSION:
        print(f"ERROR: this tool checks hash_algorithm sha256 with encoding_version {ENCODING_VERSION}; the "
              f"manifest says {manifest.get('hash_algorithm')} / {manifest.get('encoding_version')}", file=sys.stderr)
        return 2
    if manifest.get("format") not in ("csv", "jsonl"):
        print(f"ERROR: unknown format {manifest.get('format')!r}", file=sys.stderr)
        return 2
    try:
        failures, summary = verify(path, manifest)
    except OSError as exc:
        print(f"ERROR: cannot read the export: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        failures, summary = [f"the file is not UTF-8 text ({exc})"], ""
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
