#!/usr/bin/env python3
"""bench/gpu/parallel_pack.py - phimoe-pack on many cores: the weights.phw of a pack plan, made by
several phimoe-pack processes at once, each packing a share of the plan into a file of its own,
then assembled. The same bytes as one phimoe-pack (bench_gpu.py selftest compares them).

  parallel_pack.py PHIMOE_PACK PLAN.json CHECKPOINT_DIR OUT.phw [-j JOBS]

Why: phimoe-pack is one thread, and its q4_K quantizer (a search per sub-block) runs at a few
million values a second; a 2-layer model of Phi-3.5-MoE's widths is 2.9 billion values.

How: a weight whose parts (checkpoint tensors, e.g. the 32 w1/w3 of a layer's stacked experts)
are large is cut between parts, and each share becomes a weight of its own in a sub-plan; every
sub-plan goes to one phimoe-pack. Assembling copies each share's bytes to where the whole weight
has them: for plain storages one range; for the block storages of the CUDA layout
(runtime/include/phimoe_rt/split_layout.h: each field of every block, field after field) one
range per field. The header is the plan's (fields as runtime/include/phimoe_rt/pack_format.h has
them; the version as phimoe-pack writes it).

Also: derive_pack() makes the pack of a model with fewer layers from a pack of the same
checkpoint with more (every weight of the smaller plan, same name, storage, size and parts, is in
the larger pack: its bytes are copied).
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

# storage -> (values a block, bytes a block, bytes of each field in the split layout, or None
# for a plain storage). split_layout.h's kSplitQ8_0, kSplitQ4K, kSplitQ6K.
STORAGES = {"q8_0": (32, 34, [32, 2]), "q4k": (256, 144, [128, 16]),
            "q6k": (256, 210, [128, 64, 16, 2]), "f32": (1, 4, None), "bf16": (1, 2, None),
            "f16": (1, 2, None)}
HEADER = struct.Struct("<8sIIQQQQ16x")  # pack_format.h: PackHeader (64 bytes)
ALIGN = 4096  # kPackAlignment; checked against every file phimoe-pack writes


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def read_header(path):
    with open(path, "rb") as f:
        magic, version, n, model_hash, table_bytes, data_offset, data_bytes = \
            HEADER.unpack(f.read(HEADER.size))
    if magic != b"PHIMOEW\0":
        raise ValueError(f"{path}: not a weight pack")
    if data_offset != _align(HEADER.size + table_bytes):
        raise ValueError(f"{path}: data at {data_offset}, not where alignment {ALIGN} puts it")
    return dict(version=version, num_tensors=n, model_hash=model_hash, table_bytes=table_bytes,
                data_offset=data_offset, data_bytes=data_bytes)


def start_pack(out, plan, version):
    """Creates OUT with the plan's header and table, sized for its data; returns data_offset."""
    table = plan["table"].encode()
    data_offset = _align(HEADER.size + len(table))
    with open(out, "wb") as f:
        f.write(HEADER.pack(b"PHIMOEW\0", version, len(plan["weights"]), plan["model_hash"],
                            len(table), data_offset, plan["data_bytes"]))
        f.write(table)
        f.truncate(data_offset + plan["data_bytes"])
    return data_offset


def copy_range(src_fd, src_at, dst_fd, dst_at, n):
    step = 64 << 20
    while n > 0:
        k = min(step, n)
        data = os.pread(src_fd, k, src_at)
        if len(data) != k:
            raise IOError("short read")
        os.pwrite(dst_fd, data, dst_at)
        src_at, dst_at, n = src_at + k, dst_at + k, n - k


def parallel_pack(tool, plan_path, checkpoint, out, part_values, jobs=None, scratch=None,
                  unit_values=1 << 24, log=print):
    """Packs plan_path's weights with `jobs` phimoe-pack processes. part_values: {checkpoint
    tensor name: number of values}. A weight is cut between parts once a share holds
    unit_values values."""
    plan = json.loads(pathlib.Path(plan_path).read_text())
    if plan.get("layout") != "cuda":
        raise ValueError("parallel_pack handles the cuda layout only")
    jobs = jobs or os.cpu_count() or 2
    units = []  # (weight index, first part, end part, values before the first part, values)
    for i, w in enumerate(plan["weights"]):
        if w["storage"] not in STORAGES:
            raise ValueError(f"storage {w['storage']} unknown here")
        vals = [part_values[p] for p in w["parts"]]
        a, before, acc = 0, 0, 0
        for j, v in enumerate(vals):
            acc += v
            if acc >= unit_values or j == len(vals) - 1:
                units.append((i, a, j + 1, before, acc))
                before, a, acc = before + acc, j + 1, 0
    bins = [[] for _ in range(min(jobs, len(units)))]
    load = [0] * len(bins)
    for u in sorted(units, key=lambda u: -u[4]):  # longest first, to the least loaded
        k = load.index(min(load))
        bins[k].append(u)
        load[k] += u[4]
    tmp = tempfile.mkdtemp(prefix="ppack-", dir=scratch or pathlib.Path(out).parent)
    pieces = []
    for k, share in enumerate(bins):
        weights, at, placed = [], 0, []
        for (i, a, b, before, v) in share:
            w = plan["weights"][i]
            vpb, bpb, _ = STORAGES[w["storage"]]
            if v % vpb or before % vpb:
                raise ValueError(f"{w['name']}: a share is not whole blocks")
            nbytes = v // vpb * bpb
            weights.append(dict(w, name=f"{w['name']}[{a}:{b}]", offset=at, bytes=nbytes,
                                parts=w["parts"][a:b]))
            placed.append((i, before, v, at))
            at = _align(at + nbytes)
        sub = dict(plan, weights=weights, table="[]", data_bytes=at)
        sub_path = pathlib.Path(tmp) / f"plan-{k}.json"
        sub_path.write_text(json.dumps(sub))
        pieces.append((sub_path, pathlib.Path(tmp) / f"piece-{k}.phw", placed))
    log(f"parallel_pack: {len(units)} shares of {len(plan['weights'])} weights in "
        f"{len(pieces)} phimoe-pack processes")

    def run(piece):
        sub_path, piece_path, _ = piece
        proc = subprocess.run([str(tool), str(sub_path), str(checkpoint), str(piece_path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"phimoe-pack {sub_path.name}: {proc.stderr[-2000:]}")
    try:
        with concurrent.futures.ThreadPoolExecutor(len(pieces)) as ex:
            list(ex.map(run, pieces))
        head = read_header(pieces[0][1])
        data_offset = start_pack(out, plan, head["version"])
        dst = os.open(out, os.O_WRONLY)
        try:
            for _, piece_path, placed in pieces:
                src_off = read_header(piece_path)["data_offset"]
                src = os.open(piece_path, os.O_RDONLY)
                try:
                    for (i, before, v, at) in placed:
                        w = plan["weights"][i]
                        vpb, bpb, fields = STORAGES[w["storage"]]
                        base_src, base_dst = src_off + at, data_offset + w["offset"]
                        if fields is None:
                            copy_range(src, base_src, dst, base_dst + before * bpb, v * bpb)
                            continue
                        total, first, count = w["bytes"] // bpb, before // vpb, v // vpb
                        region_src = region_dst = 0
                        for fb in fields:
                            copy_range(src, base_src + region_src + 0, dst,
                                       base_dst + region_dst + first * fb, count * fb)
                            region_src += count * fb
                            region_dst += total * fb
                finally:
                    os.close(src)
                os.unlink(piece_path)
        finally:
            os.close(dst)
    finally:
        for p in pathlib.Path(tmp).iterdir():
            p.unlink()
        os.rmdir(tmp)
    return out


def derive_pack(big_plan_path, big_pack, small_plan_path, out):
    """The small plan's pack from the big plan's pack of the same checkpoint, by copying each
    weight's bytes. Returns False (writing nothing) when a weight of the small plan is not in the
    big one with the same storage, bytes and parts."""
    big = json.loads(pathlib.Path(big_plan_path).read_text())
    small = json.loads(pathlib.Path(small_plan_path).read_text())
    if big.get("layout") != small.get("layout"):
        return False
    by_name = {w["name"]: w for w in big["weights"]}
    for w in small["weights"]:
        b = by_name.get(w["name"])
        if not b or (b["storage"], b["bytes"], b["parts"]) != (w["storage"], w["bytes"],
                                                               w["parts"]):
            return False
    head = read_header(big_pack)
    data_offset = start_pack(out, small, head["version"])
    src, dst = os.open(big_pack, os.O_RDONLY), os.open(out, os.O_WRONLY)
    try:
        for w in small["weights"]:
            copy_range(src, head["data_offset"] + by_name[w["name"]]["offset"], dst,
                       data_offset + w["offset"], w["bytes"])
    finally:
        os.close(src)
        os.close(dst)
    return True


def checkpoint_values(checkpoint):
    """{tensor name: values} from the safetensors headers of a checkpoint directory."""
    d = pathlib.Path(checkpoint)
    index = d / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if \
        index.is_file() else ["model.safetensors"]
    values = {}
    for name in files:
        with open(d / name, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                count = 1
                for s in v["shape"]:
                    count *= s
                values[k] = count
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool")
    ap.add_argument("plan")
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count())
    a = ap.parse_args()
    parallel_pack(a.tool, a.plan, a.checkpoint, a.out, checkpoint_values(a.checkpoint), a.jobs,
                  log=lambda *x: print(*x, file=sys.stderr))


if __name__ == "__main__":
    main()
