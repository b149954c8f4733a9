"""Which zennit configuration is the fair baseline: zennit set up several ways, timed interleaved.

    python benchmarks/zennit_baseline.py cifar-paper 64 [--rounds 7]

Rows (all epsilon, relative to onnxlrp and to PyTorch's input gradient in the same rounds):
- `baseline`: what run.py times: the attributor open on its own copy of the model, parameters frozen;
- `trainable`: the same with the parameters left trainable (requires_grad=True);
- `no Pass`: without zennit's Pass hook on the ReLUs (exact for ReLU; zennit's composites add it);
- `two composites`: the epsilon and the EpsilonPlus attributors open on one model, as an earlier
  run.py had them: every call runs both composites' hooks.
OpenMP's wait policy matters more than any of these on a busy machine; it is fixed for the whole
process (set to PASSIVE before torch loads unless it is set, as run.py does), so compare it
across two runs (OMP_WAIT_POLICY=ACTIVE python benchmarks/zennit_baseline.py ...).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as run.py, before torch loads OpenMP

import torch  # noqa: E402

from benchmarks.run import Tools, interleaved, paired_ratio, zennit_attribution  # noqa: E402
from benchmarks.zennit_compat import (  # noqa: E402  (zennit's names, imported behind its torchvision stub)
    AvgPool,
    Convolution,
    Epsilon,
    Gradient,
    LayerMapComposite,
    Linear,
    Sum,
    canonizers_for,
    logit_seed,
    make_composite,
)


def open_attributor(model, composite, x):
    attributor = Gradient(model=model, composite=composite)
    attributor.__enter__()
    x = x.clone()
    return lambda: attributor(x, logit_seed)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("batch", type=int)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tools = Tools(args.case, args.batch, args.threads, rules=("epsilon",))
    fns = {"onnxlrp": tools.lrp("epsilon"), "torch_grad": tools.torch_gradient()}
    fns["baseline"] = zennit_attribution(tools.model, "epsilon", tools.xt)
    trainable = copy.deepcopy(tools.model)
    fns["trainable"] = open_attributor(trainable, make_composite("epsilon", trainable), tools.xt)
    bare = copy.deepcopy(tools.model).requires_grad_(False)
    layer_map = [(t, Epsilon(epsilon=1.0)) for t in (Sum, AvgPool, Convolution, Linear)]
    fns["no Pass"] = open_attributor(
        bare, LayerMapComposite(layer_map, canonizers=canonizers_for(bare)), tools.xt
    )
    shared = copy.deepcopy(tools.model).requires_grad_(False)
    fns["two composites"] = open_attributor(shared, make_composite("epsilon", shared), tools.xt)
    open_attributor(shared, make_composite("epsilon-plus", shared), tools.xt)
    times = interleaved(fns, args.rounds)
    zennit_rows = [name for name in fns if name not in ("onnxlrp", "torch_grad")]
    print(
        json.dumps(
            {
                "case": args.case,
                "batch": args.batch,
                "rounds": len(times["onnxlrp"]),
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                "load": os.getloadavg(),
                "zennit/onnxlrp": {
                    n: round(paired_ratio(times[n], times["onnxlrp"]), 2) for n in zennit_rows
                },
                "zennit/torch_grad": {
                    n: round(paired_ratio(times[n], times["torch_grad"]), 2) for n in zennit_rows
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
