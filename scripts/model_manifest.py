#!/usr/bin/env python3
"""Write and check the manifest.json of one model directory in the model cache.

Contract with the daemon (format_version 1):

    {
      "format_version": 1,
      "name": "silero-vad",
      "kind": "vad",
      "source": "PyPI silero-vad==6.2.3 (silero_vad/data/silero_vad.onnx)",
      "license": "MIT",
      "files": [{"path": "model.onnx", "size": 2327524, "sha256": "..."}],
      "parameters": {...}
    }

"files" lists every regular file under the directory except manifest.json, sorted by path
(paths relative to the directory, "/"-separated). Symlinks are refused: the cache holds none.

Standard library only, so that fetch-models can import it without any virtual environment.

CLI:
    model_manifest.py write DIR --name N --kind K --source S --license L
                            [--parameters JSON | --parameters-file FILE]
    model_manifest.py check DIR [--verify]     # exit 0 when the files match the manifest
"""

import argparse
import hashlib
import json
import os
import sys

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("runtime", "asr", "vad", "segmentation", "speaker-embedding", "text-embedding")


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def list_files(model_dir):
    """Relative paths of every regular file under model_dir except manifest.json, sorted."""
    out = []
    for root, dirs, files in os.walk(model_dir):
        dirs.sort()
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                raise ValueError(f"symlink not allowed in the model cache: {os.path.join(root, d)}")
        for fn in files:
            full = os.path.join(root, fn)
            rel = os.path.relpath(full, model_dir).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            if os.path.islink(full):
                raise ValueError(f"symlink not allowed in the model cache: {full}")
            if not os.path.isfile(full):
                raise ValueError(f"not a regular file: {full}")
            out.append(rel)
    return sorted(out)


def build_manifest(model_dir, name, kind, source, license, parameters):
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if not isinstance(parameters, dict):
        raise ValueError("parameters must be a JSON object")
    files = []
    for rel in list_files(model_dir):
        full = os.path.join(model_dir, rel)
        files.append({"path": rel, "size": os.path.getsize(full), "sha256": sha256_file(full)})
    if not files:
        raise ValueError(f"{model_dir} holds no files")
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "source": source,
        "license": license,
        "files": files,
        "parameters": parameters,
    }


def write_manifest(model_dir, name, kind, source, license, parameters):
    """Hash every file of model_dir and write model_dir/manifest.json (atomically). Returns the dict."""
    manifest = build_manifest(model_dir, name, kind, source, license, parameters)
    path = os.path.join(model_dir, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return manifest


def read_manifest(model_dir):
    with open(os.path.join(model_dir, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def check_manifest(model_dir, verify=False, expect_name=None):
    """Return (ok, reason). Cheap check: every listed file exists with its size and no file is
    unlisted. verify=True also re-hashes every file."""
    try:
        m = read_manifest(model_dir)
    except FileNotFoundError:
        return False, "no manifest.json"
    except (OSError, ValueError) as e:
        return False, f"unreadable manifest.json: {e}"
    if m.get("format_version") != FORMAT_VERSION:
        return False, f"format_version {m.get('format_version')!r} != {FORMAT_VERSION}"
    if expect_name is not None and m.get("name") != expect_name:
        return False, f"manifest names {m.get('name')!r}, expected {expect_name!r}"
    files = m.get("files") or []
    try:
        present = list_files(model_dir)
    except ValueError as e:
        return False, str(e)
    listed = sorted(f["path"] for f in files)
    if listed != present:
        extra = sorted(set(present) - set(listed))
        missing = sorted(set(listed) - set(present))
        return False, f"file set differs (missing {missing}, unlisted {extra})"
    for f in files:
        full = os.path.join(model_dir, f["path"])
        size = os.path.getsize(full)
        if size != f["size"]:
            return False, f"{f['path']}: size {size} != {f['size']}"
        if verify:
            digest = sha256_file(full)
            if digest != f["sha256"]:
                return False, f"{f['path']}: sha256 mismatch"
    return True, "ok"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="hash the files of DIR and write DIR/manifest.json")
    w.add_argument("dir")
    w.add_argument("--name", required=True)
    w.add_argument("--kind", required=True, choices=KINDS)
    w.add_argument("--source", required=True)
    w.add_argument("--license", required=True)
    g = w.add_mutually_exclusive_group()
    g.add_argument("--parameters", help="JSON object")
    g.add_argument("--parameters-file", help="file holding a JSON object")
    c = sub.add_parser("check", help="exit 0 when DIR matches its manifest.json")
    c.add_argument("dir")
    c.add_argument("--verify", action="store_true", help="also re-hash every file")
    args = ap.parse_args(argv)

    if args.cmd == "write":
        if args.parameters_file:
            with open(args.parameters_file, encoding="utf-8") as f:
                params = json.load(f)
        elif args.parameters:
            params = json.loads(args.parameters)
        else:
            params = {}
        m = write_manifest(args.dir, args.name, args.kind, args.source, args.license, params)
        total = sum(f["size"] for f in m["files"])
        print(f"wrote {os.path.join(args.dir, MANIFEST)}: {len(m['files'])} files, {total} bytes")
        return 0
    ok, reason = check_manifest(args.dir, verify=args.verify)
    print(f"{args.dir}: {reason}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
