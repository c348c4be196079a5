"""MTT's image learning rate and iteration budget on MNIST / Fashion-MNIST IPC 1, chosen on a validation split.

MNIST has no MTT setting in the papers (MTT, FTD and DATM publish CIFAR, Tiny-ImageNet and ImageNet
subsets only). 100 training images per class are held out (``holdout(100)``, as the tables' MTT entries);
the experts (4 epochs, cached) are trained without them. The choice uses the first expert only (the
tables' runs use 5: the choice ran while the others were still training). One MTT run per ``lr_img``
candidate (seed 100, not a table seed), with snapshots, each scored by 3 ConvNets x 300 epochs (the tables' protocol) on
the held-out images. The test set plays no part (the Evaluator computes a test accuracy; it is not
printed or stored). Usage:

    python benchmarks/mtt_choice.py mnist 10 100 1000      # dataset, then the lr_img candidates

Prints one JSON line per candidate; the choice and its numbers are in benchmarks/NOTES.md.
"""
import json
import sys
import time

import torch

torch.set_num_threads(1)
from distillset import Evaluator, get_method, load_dataset  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from run import data_root  # noqa: E402

SETTINGS = dict(ipc=1, num_experts=1, train_epochs=4, syn_steps=20, expert_epochs=2, max_start_epoch=2, lr_lr=1e-7,
                random_state=100, device="cpu", progress=False)
SNAPSHOTS = [100, 300]

if __name__ == "__main__":
    data = load_dataset(sys.argv[1], root=data_root()).holdout(100)
    ev = Evaluator(n_models=3, epochs=300, augment="auto", random_state=100)
    for lr_img in map(float, sys.argv[2:]):
        t0 = time.perf_counter()
        mtt = get_method("mtt", iterations=max(SNAPSHOTS), lr_img=lr_img, **SETTINGS).fit(data, snapshots=SNAPSHOTS)
        seconds = time.perf_counter() - t0
        val = {n: ev.score(s, data)["convnet"].extra["val_accuracies"] for n, s in mtt.snapshots_.items()}
        loss = mtt.history_["loss"]
        print(json.dumps({"dataset": sys.argv[1], "lr_img": lr_img, "seconds": round(seconds, 1),
                          "loss_first50": sum(loss[:50]) / 50, "loss_last50": sum(loss[-50:]) / 50,
                          "learned_lr": float(mtt.synthetic_.lrs), "val": val,
                          "val_mean": {n: sum(v) / len(v) for n, v in val.items()}}), flush=True)
