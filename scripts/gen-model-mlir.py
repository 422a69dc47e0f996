#!/usr/bin/env python3
"""Writes a small PhiMoE model in the phimoe dialect, unfused, as the frontend
states a checkpoint: one weight symbol per checkpoint tensor, and the forward
pass of ../shared/docs/phimoe-reference.md op by op.

Used to make the inputs of test/Pipelines/; `phimoec compile` builds the same
IR from a checkpoint's config.json. `--arch mixtral` writes a Mixtral instead (RMSNorms,
no biases, softmax top-2 routing); `--arch phixtral` a phixtral (phi-msft names, one
LayerNorm feeding attention and MoE in parallel, partial rotary, biased gelu experts).

  scripts/gen-model-mlir.py --layers 2 > test/Pipelines/phimoe-2layer.mlir
  scripts/gen-model-mlir.py --arch mixtral > test/Pipelines/mixtral-1layer.mlir
  scripts/gen-model-mlir.py --arch phixtral > test/Pipelines/phixtral-1layer.mlir
"""
import argparse


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--arch", choices=["phimoe", "mixtral", "phixtral"], default="phimoe")
    ap.add_argument("--rotary-dim", type=int, default=8, help="phixtral: lanes RoPE rotates")
    a = ap.parse_args()
    mixtral = a.arch == "mixtral"

    H, I, V, E, dt = a.hidden, a.intermediate, a.vocab, a.experts, a.dtype
    hd = H // a.heads
    kvw = a.kv_heads * hd
    out = []
    w = out.append
    decls = []

    def weight(name, shape):
        t = f"tensor<{'x'.join(map(str, shape))}x{dt}>"
        decls.append(f"  phimoe.weight @{name} : {t}")
        return name, t

    n = [0]

    def val(prefix="v"):
        n[0] += 1
        return f"%{prefix}{n[0]}"

    act = lambda width: f"tensor<?x{width}xf32>"

    def ref(name, t):
        v = val("w")
        w(f"    {v} = phimoe.weight_ref @{name} : {t}")
        return v, t

    def linear(x, xw, wname, bias=None):
        wv, wt = ref(*wname)
        rows = int(wt.split("<")[1].split("x")[0])
        y = val()
        if bias:
            bv, bt = ref(*bias)
            w(f"    {y} = phimoe.linear {x}, {wv}, {bv} : {act(xw)}, {wt}, {bt} -> {act(rows)}")
        else:
            w(f"    {y} = phimoe.linear {x}, {wv} : {act(xw)}, {wt} -> {act(rows)}")
        return y, rows

    def norm(x, prefix):
        wv, wt = ref(*weight(f"{prefix}.weight", [H]))
        if mixtral:
            y = val()
            w(f"    {y} = phimoe.layer_norm {x}, {wv} {{epsilon = 1.0e-05 : f64, rms}} : {act(H)}, {wt}")
            return y
        bv, _ = ref(*weight(f"{prefix}.bias", [H]))
        y = val()
        w(f"    {y} = phimoe.layer_norm {x}, {wv}, {bv} {{epsilon = 1.0e-05 : f64}} : {act(H)}, {wt}")
        return y

    def bias(name, shape):
        return None if mixtral else weight(name, shape)

    cache = f"!phimoe.kv_cache<layers = {a.layers}, kv_heads = {a.kv_heads}, head_dim = {hd}, dtype = f32>"
    w(f"  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %cache: {cache}) -> {act(V)} {{")
    if a.arch == "phixtral":
        phixtral(a, H, I, V, E, hd, kvw, cache, weight, val, ref, linear, norm, act, w)
        print(f"#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 2048, "
              f"short_mscale = 1.0, long_mscale = 1.0, short_factor = "
              f"[{', '.join(['1.0'] * (a.rotary_dim // 2))}], long_factor = "
              f"[{', '.join(['1.0'] * (a.rotary_dim // 2))}]>")
        print("module {")
        print("\n".join(decls))
        print("\n".join(out))
        print("}")
        return
    ev, et = ref(*weight("model.embed_tokens.weight", [V, H]))
    h = val("h")
    w(f"    {h} = phimoe.embed %ids, {ev} : tensor<?xi32>, {et} -> {act(H)}")
    for L in range(a.layers):
        p = f"model.layers.{L}"
        w(f"    // layer {L}: attention")
        x = norm(h, f"{p}.input_layernorm")
        proj = {}
        for nm, rows in (("q", H), ("k", kvw), ("v", kvw)):
            proj[nm], _ = linear(x, H, weight(f"{p}.self_attn.{nm}_proj.weight", [rows, H]),
                                 bias(f"{p}.self_attn.{nm}_proj.bias", [rows]))
        for nm, width in (("q", H), ("k", kvw)):
            r = val()
            w(f"    {r} = phimoe.rope {proj[nm]}, %pos {{head_dim = {hd} : i64, scaling = #rope}} : {act(width)}, tensor<?xi32>")
            proj[nm] = r
        att = val()
        w(f"    {att} = phimoe.attention {proj['q']}, {proj['k']}, {proj['v']}, %pos, %cache "
          f"{{head_dim = {hd} : i64, layer = {L} : i64, num_heads = {a.heads} : i64, num_kv_heads = {a.kv_heads} : i64}} "
          f": {act(H)}, {act(kvw)}, tensor<?xi32>, {cache}")
        o, _ = linear(att, H, weight(f"{p}.self_attn.o_proj.weight", [H, H]),
                      bias(f"{p}.self_attn.o_proj.bias", [H]))
        h2 = val("h")
        w(f"    {h2} = phimoe.add {h}, {o} : {act(H)}")
        h = h2
        w(f"    // layer {L}: mixture of experts")
        x = norm(h, f"{p}.post_attention_layernorm")
        gv, gt = ref(*weight(f"{p}.block_sparse_moe.gate.weight", [E, H]))
        ids, rw = val("experts"), val("routing")
        routing = "softmax_topk {x}, {gv} {{epsilon = 0.0" if mixtral else \
            "sparsemixer {x}, {gv} {{epsilon = 1.0e-02"
        w(f"    {ids}, {rw} = phimoe.router {routing.format(x=x, gv=gv)} : f64, top_k = 2 : i64}} "
          f": {act(H)}, {gt} -> tensor<?x2xi32>, tensor<?x2xf32>")
        outs = []
        for e in range(E):
            q = f"{p}.block_sparse_moe.experts.{e}"
            g, _ = linear(x, H, weight(f"{q}.w1.weight", [I, H]))
            u, _ = linear(x, H, weight(f"{q}.w3.weight", [I, H]))
            s, m = val(), val()
            w(f"    {s} = phimoe.silu {g} : {act(I)}")
            w(f"    {m} = phimoe.mul {s}, {u} : {act(I)}")
            d, _ = linear(m, I, weight(f"{q}.w2.weight", [H, I]))
            outs.append(d)
        moe = val()
        w(f"    {moe} = phimoe.moe_combine {ids}, {rw}, {', '.join(outs)} : tensor<?x2xi32>, tensor<?x2xf32>, "
          f"{', '.join([act(H)] * E)} -> {act(H)}")
        h2 = val("h")
        w(f"    {h2} = phimoe.add {h}, {moe} : {act(H)}")
        h = h2
    x = norm(h, "model.norm")
    lw, lt = ref(*weight("lm_head.weight", [V, H]))
    if mixtral:
        logits = val("logits")
        w(f"    {logits} = phimoe.lm_head {x}, {lw} : {act(H)}, {lt} -> {act(V)}")
    else:
        lb, bt = ref(*weight("lm_head.bias", [V]))
        logits = val("logits")
        w(f"    {logits} = phimoe.lm_head {x}, {lw}, {lb} : {act(H)}, {lt}, {bt} -> {act(V)}")
    w(f"    return {logits} : {act(V)}")
    w("  }")

    factors = ", ".join(["1.0"] * (hd // 2))
    if mixtral:  # plain RoPE, as the frontend states it: factors and mscales 1, no switch
        print(f"#rope = #phimoe.longrope<theta = 1000000.0, original_max_position = 32768, "
              f"short_mscale = 1.0, long_mscale = 1.0, short_factor = [{factors}], "
              f"long_factor = [{factors}]>")
    else:
        long_f = ", ".join(f"{1.0 + 0.25 * i}" for i in range(hd // 2))
        print(f"#rope = #phimoe.longrope<theta = 10000.0, original_max_position = 32, "
              f"short_mscale = 1.1684489, long_mscale = 1.1684489, short_factor = [{factors}], "
              f"long_factor = [{long_f}]>")
    print("module {")
    print("\n".join(decls))
    print("\n".join(out))
    print("}")


def phixtral(a, H, I, V, E, hd, kvw, cache, weight, val, ref, linear, norm, act, w):
    """The forward pass of a phixtral checkpoint (phi-2 blocks with MoE MLPs; `norm` is
    main's LayerNorm with weight and bias)."""
    ev, et = ref(*weight("transformer.embd.wte.weight", [V, H]))
    h = val("h")
    w(f"    {h} = phimoe.embed %ids, {ev} : tensor<?xi32>, {et} -> {act(H)}")
    for L in range(a.layers):
        p = f"transformer.h.{L}"
        w(f"    // layer {L}: attention and mixture of experts in parallel from one LayerNorm")
        x = norm(h, f"{p}.ln")
        rows = H + 2 * kvw
        qkv, _ = linear(x, H, weight(f"{p}.mixer.Wqkv.weight", [rows, H]),
                        weight(f"{p}.mixer.Wqkv.bias", [rows]))
        q, k, v = val(), val(), val()
        w(f"    {q}, {k}, {v} = phimoe.split {qkv} [{H}, {kvw}, {kvw}] : {act(rows)} -> "
          f"{act(H)}, {act(kvw)}, {act(kvw)}")
        rq, rk = val(), val()
        for r, src, width in ((rq, q, H), (rk, k, kvw)):
            w(f"    {r} = phimoe.rope {src}, %pos {{head_dim = {hd} : i64, rotary_dim = "
              f"{a.rotary_dim} : i64, scaling = #rope}} : {act(width)}, tensor<?xi32>")
        att = val()
        w(f"    {att} = phimoe.attention {rq}, {rk}, {v}, %pos, %cache "
          f"{{head_dim = {hd} : i64, layer = {L} : i64, num_heads = {a.heads} : i64, num_kv_heads = {a.kv_heads} : i64}} "
          f": {act(H)}, {act(kvw)}, tensor<?xi32>, {cache}")
        o, _ = linear(att, H, weight(f"{p}.mixer.out_proj.weight", [H, H]),
                      weight(f"{p}.mixer.out_proj.bias", [H]))
        gv, gt = ref(*weight(f"{p}.moe.gate.weight", [E, H]))
        ids, rw = val("experts"), val("routing")
        w(f"    {ids}, {rw} = phimoe.router softmax_topk {x}, {gv} {{epsilon = 0.0 : f64, top_k = 2 : i64}} "
          f": {act(H)}, {gt} -> tensor<?x2xi32>, tensor<?x2xf32>")
        outs = []
        for e in range(E):
            q = f"{p}.moe.mlp.{e}"
            f1, _ = linear(x, H, weight(f"{q}.fc1.weight", [I, H]), weight(f"{q}.fc1.bias", [I]))
            g = val()
            w(f"    {g} = phimoe.gelu {f1} : {act(I)}")
            d, _ = linear(g, I, weight(f"{q}.fc2.weight", [H, I]), weight(f"{q}.fc2.bias", [H]))
            outs.append(d)
        moe = val()
        w(f"    {moe} = phimoe.moe_combine {ids}, {rw}, {', '.join(outs)} : tensor<?x2xi32>, tensor<?x2xf32>, "
          f"{', '.join([act(H)] * E)} -> {act(H)}")
        both, h2 = val(), val("h")
        w(f"    {both} = phimoe.add {o}, {moe} : {act(H)}")
        w(f"    {h2} = phimoe.add {both}, {h} : {act(H)}")
        h = h2
    x = norm(h, "lm_head.ln")
    lw, lt = ref(*weight("lm_head.linear.weight", [V, H]))
    lb, bt = ref(*weight("lm_head.linear.bias", [V]))
    logits = val("logits")
    w(f"    {logits} = phimoe.lm_head {x}, {lw}, {lb} : {act(H)}, {lt}, {bt} -> {act(V)}")
    w(f"    return {logits} : {act(V)}")
    w("  }")


if __name__ == "__main__":
    main()
