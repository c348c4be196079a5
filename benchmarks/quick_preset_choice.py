"""The quick preset's DM budget (`distillset distill` with no options), chosen on a validation split.

20 images per class are held out of `digits`' training split before distilling; DM runs 1000 iterations
per seed with snapshots at 300 and 1000, and 3 ConvNets x 300 epochs score each set and a random subset
on the held-out images. The test set plays no part (its accuracy is computed by the Evaluator but not
printed). Result in benchmarks/NOTES.md ("The quick preset"). About 3 minutes on 2 cores.
"""
import torch, json
torch.set_num_threads(1)
from distillset import load_dataset, get_method, Evaluator
from distillset.utils import derive_seed
data = load_dataset("digits").holdout(20)
out = {}
for seed in (0, 1, 2):
    dm = get_method("dm", ipc=1, iterations=1000, random_state=seed, progress=False).fit(data, snapshots=[300, 1000])
    rnd = get_method("random", ipc=1, random_state=derive_seed(seed, "baseline/random")).fit(data).synthetic_
    ev = Evaluator(n_models=3, epochs=300, random_state=seed)
    for name, s in {"dm300": dm.snapshots_[300], "dm1000": dm.snapshots_[1000], "random": rnd}.items():
        r = ev.score(s, data)["convnet"]
        out.setdefault(name, []).append(r.extra["val_accuracies"])
        print(seed, name, "val", [round(v, 1) for v in r.extra["val_accuracies"]], flush=True)
print(json.dumps(out))
