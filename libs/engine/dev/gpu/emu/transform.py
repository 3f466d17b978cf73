#!/usr/bin/env python3
"""dev/gpu/emu/transform.py SRC_CUDA_DIR OUT_DIR NAME... — rewrites src/cuda/NAME.cu into plain C++ for
the emulator (emu.h): dynamic shared memory from emu::dyn_smem(), __shared__ as function statics
(blocks run one after another), and every kernel<<<grid, block, smem, stream>>>(args) as
emu::launch(grid, block, smem, [&]{ kernel(args); })."""
import re
import sys

src, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in names:
    s = open(f"{src}/{name}.cu").read()
    s = s.replace("#include <mma.h>", "")
    s = re.sub(r"extern __shared__ float (\w+)\[\];", r"float* \1 = reinterpret_cast<float*>(emu::dyn_smem());", s)
    s = re.sub(r"extern __shared__ __align__\(128\) unsigned char (\w+)\[\];", r"unsigned char* \1 = emu::dyn_smem();", s)
    s = s.replace("__shared__", "static")
    out, i = "", 0
    while True:
        j = s.find("<<<", i)
        if j < 0:
            out += s[i:]
            break
        k = j
        while s[k - 1] not in " \n;{":
            k -= 1
        kern = s[k:j]
        e = s.find(">>>", j)
        parts = [p.strip() for p in re.split(r",(?![^()]*\))", s[j + 3 : e])]
        p0 = e + 3
        assert s[p0] == "(", f"{name}: no argument list after <<<...>>>"
        depth, q = 0, p0
        while True:
            if s[q] == "(":
                depth += 1
            elif s[q] == ")":
                depth -= 1
                if depth == 0:
                    break
            q += 1
        out += s[i:k] + f"emu::launch(dim3({parts[0]}), dim3({parts[1]}), {parts[2]}, [&]{{ {kern}({s[p0 + 1:q]}); }})"
        i = q + 1
    open(f"{out_dir}/{name}.cpp", "w").write('#include "emu.h"\n' + out)
