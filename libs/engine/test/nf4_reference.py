#!/usr/bin/python3
"""NF4 reference in plain torch (test-only), written from bitsandbytes' published algorithm.

bitsandbytes' quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True):
  * absmax per block of 64 consecutive elements of the flattened tensor;
  * code = argmin |clamp(x * (1/absmax), -1, 1) - NF4| (first index on ties);
  * packed = code[0::2] << 4 | code[1::2] (first element in the high nibble), odd n padded with 0.0;
  * double quantisation: offset = mean(absmax); quantize_blockwise(absmax - offset, blocksize=256)
    with the signed dynamic map: scale = max |.| per block, code = argmin |clamp(v / scale) - map|;
  * dequantised absmax = map[q] * scale + offset; value = NF4[code] * absmax.
Two choices of ours, mirrored by the engine (src/nf4.cpp): the mean is accumulated in f64 and
rounded to f32, the dynamic map is built in f64 and rounded to f32 (bitsandbytes builds it in f32:
same entries to within one f32 ulp), and a block whose values are all 0 gets absmax 0 and codes of
0.0 (bitsandbytes would divide by zero).

Writes test/nf4-golden.bin, read by test/test_nf4.cpp:
  magic b"LNF4" | u32 version 1 | u32 n | f32 codebook[16] | f32 dynamic_map[256]
  | f32 input[n] | u8 codes[(n+1)//2] | f32 dequantised[n]          (little endian)

Usage: /usr/bin/python3 test/nf4_reference.py [--out test/nf4-golden.bin]
"""
import argparse
import struct

import torch

# The NF4 data type as bitsandbytes publishes it (QLoRA, Dettmers et al. 2023).
NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=torch.float32)


def dynamic_map():
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), in f64 then f32."""
    data = []
    for i in range(7):
        items = 2 ** i + 1
        step = (1.0 - 0.1) / (items - 1)
        bounds = [0.1 + k * step for k in range(items - 1)] + [1.0]
        for k in range(items - 1):
            mean = (bounds[k] + bounds[k + 1]) / 2.0
            data += [10.0 ** (i - 6) * mean, -(10.0 ** (i - 6)) * mean]
    data += [0.0, 1.0]
    data.sort()
    assert len(data) == 256
    return torch.tensor(data, dtype=torch.float64).to(torch.float32)


def blockwise(values, code, blocksize):
    """absmax per block and argmin codes of clamp(v * (1/absmax), -1, 1); zero blocks code to 0.0."""
    n = values.numel()
    nb = (n + blocksize - 1) // blocksize
    padded = torch.cat([values, values.new_zeros(nb * blocksize - n)]).view(nb, blocksize)
    absmax = padded.abs().amax(dim=1)
    inv = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))
    scaled = torch.clamp(padded * inv.view(-1, 1), -1.0, 1.0).reshape(-1)[:n]
    q = torch.argmin((scaled.view(-1, 1) - code.view(1, -1)).abs(), dim=1)
    return q, absmax


def nf4_roundtrip(x):
    n = x.numel()
    q, absmax = blockwise(x, NF4, 64)
    offset = absmax.double().mean().float()
    dmap = dynamic_map()
    q2, scale2 = blockwise(absmax - offset, dmap, 256)
    absmax_dq = dmap[q2] * scale2.repeat_interleave(256)[: absmax.numel()] + offset
    out = NF4[q] * absmax_dq.repeat_interleave(64)[:n]
    qp = torch.cat([q, torch.full((n % 2,), 7, dtype=q.dtype)])
    packed = (qp[0::2] << 4 | qp[1::2]).to(torch.uint8)
    return packed, out


def golden_input():
    """Normal weights in blocks of varied scale, one all-zero block, outliers, exact codebook
    multiples, and a partial last block: 257 blocks of 64 + 10, so 2 absmax blocks of 256."""
    g = torch.Generator().manual_seed(1234)
    n = 64 * 257 + 10
    x = torch.randn(n, generator=g, dtype=torch.float32)
    scales = torch.exp(torch.randn((n + 63) // 64, generator=g) * 0.5)
    x = x * scales.repeat_interleave(64)[:n]
    x[64 * 3: 64 * 4] = 0.0
    x[64 * 5 + 7] = 25.0
    x[64 * 9: 64 * 9 + 16] = NF4 * 0.75
    x[64 * 9 + 16] = -0.75
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="test/nf4-golden.bin")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = golden_input()
    packed, out = nf4_roundtrip(x)
    with open(args.out, "wb") as f:
        f.write(b"LNF4" + struct.pack("<II", 1, x.numel()))
        for t in (NF4, dynamic_map(), x):
            f.write(t.numpy().astype("<f4").tobytes())
        f.write(packed.numpy().tobytes())
        f.write(out.numpy().astype("<f4").tobytes())
    rel = ((out - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()).item()
    print(f"wrote {args.out}: n={x.numel()}, relative RMS error {rel:.4f}")


if __name__ == "__main__":
    main()
