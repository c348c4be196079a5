"""The membership audit: LiRA finds the members of models that memorised them, and nothing in models that
never saw the candidates."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillset.applications import MembershipAudit, lira_scores, tpr_at_fpr
from distillset.applications.privacy import confidence
from distillset.errors import DistillsetError


def train_mlp(x, y, seed, epochs=300):
    """A small MLP trained full-batch to (near) zero training loss: it memorises its members."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def confidences(digits, n_models, members_of):
    """(models, pool) confidences and the members matrix, each model trained on ``members_of(model)``."""
    x = digits.normalize(digits.train.images).flatten(1)
    y = digits.train.labels
    pool = torch.arange(300)
    g = torch.Generator().manual_seed(0)
    members = torch.stack([torch.randperm(300, generator=g) < 150 for _ in range(n_models)])
    conf = []
    for m in range(n_models):
        idx = members_of(m, pool, members[m])
        net = train_mlp(x[idx], y[idx], m)
        with torch.no_grad():
            conf.append(confidence(net(x[pool]), y[pool]))
    return torch.stack(conf), members


def test_lira_finds_memorised_members(digits):
    conf, members = confidences(digits, 16, lambda m, pool, mine: pool[mine])
    scores = lira_scores(conf, members)
    assert tpr_at_fpr(scores, members, 0.01) > 0.05  # measured 0.12: far above the 1 % a blind guess gets
    from distillset.applications.privacy import roc

    assert roc(scores, members)[2] > 0.65  # measured 0.70
    assert tpr_at_fpr(conf, members, 0.01) < tpr_at_fpr(scores, members, 0.01)  # LiRA beats the loss threshold


def test_no_signal_when_no_candidate_was_trained_on(digits):
    outside = torch.arange(600, 900)  # none of the 300 candidates: the "members" are labels with no meaning
    conf, members = confidences(digits, 16, lambda m, pool, mine: outside)
    scores = lira_scores(conf, members)
    assert tpr_at_fpr(scores, members, 0.01) < 0.04  # about the FPR (measured 0.019)
    from distillset.applications.privacy import roc

    assert abs(roc(scores, members)[2] - 0.5) < 0.05


def test_audit_end_to_end_and_bad_settings(digits):
    audit = MembershipAudit("random", pool_size=np.int64(100), n_models=np.int64(3), ipc=2, epochs=5,
                            augment=None).fit(digits)  # NumPy ints were refused
    assert type(audit.to_dict()["n_models"]) is int
    r = audit.results_
    assert audit.members_.shape == (3, 100) and (audit.members_.sum(1) == 50).all()
    assert r["non_member_pairs"] == 150 and set(r["lira"]) == {"tpr_at_0.1%", "tpr_at_1%", "auc"}
    with pytest.raises(ValueError, match="n_models must be an int >= 3"):
        MembershipAudit("random", n_models=2).fit(digits)
    with pytest.raises(ValueError, match="pool_size"):
        MembershipAudit("random", pool_size=10**6).fit(digits)


def test_tpr_at_fpr_equals_the_brute_force_definition_with_ties():
    """Integer scores (many ties): the highest TPR over every threshold whose FPR is at most the bound. With
    sklearn's default ``drop_intermediate=True`` collinear corners vanish and this fails."""
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        scores = torch.randint(0, 4, (12,), generator=g).double()
        members = torch.randperm(12, generator=g) < 6
        for bound in (0.0, 1 / 6, 0.34, 0.5, 0.8):
            best = max(float((scores[members] >= t).double().mean()) for t in scores.unique().tolist() + [99.0]
                       if float((scores[~members] >= t).double().mean()) <= bound)
            assert abs(tpr_at_fpr(scores, members, bound) - best) < 1e-12


def test_lira_pooled_variance_is_unbiased():
    """Confidences drawn N(mu_i, 1) per image: the pooled std of IN and OUT comes out 1 within sampling error,
    not sqrt((n - 1) / n) of it."""
    from distillset.applications.privacy import _gaussian

    g = torch.Generator().manual_seed(0)
    conf = torch.randn(6, 4000, generator=g, dtype=torch.float64) + torch.randn(4000, generator=g, dtype=torch.float64)
    _, sd = _gaussian(conf, torch.ones(6, 4000, dtype=torch.bool))
    assert abs(float(sd) - 1.0) < 0.02  # biased: sqrt(5/6) = 0.913


BAD_ATTACK_INPUTS = [
    (lambda: tpr_at_fpr(torch.tensor([float("nan"), 0.9]), torch.tensor([False, True]), 0.01),
     "The scores hold 1 NaN or infinite value"),  # was sklearn's "Input contains NaN"
    (lambda: tpr_at_fpr(torch.rand(10), torch.arange(10) % 2 == 0, -0.1), "'fpr' parameter of tpr_at_fpr"),
    (lambda: tpr_at_fpr(torch.rand(10), torch.arange(10) % 2 == 0, 1.5), "must be a float in the range [0, 1]"),
    (lambda: tpr_at_fpr(torch.rand(10), torch.ones(10, dtype=torch.bool), 0.1), "10 members and 0 non-members"),
    (lambda: tpr_at_fpr(torch.rand(10), torch.zeros(10, dtype=torch.bool), 0.1), "0 members and 10 non-members"),
    (lambda: tpr_at_fpr(torch.rand(10), torch.ones(5, dtype=torch.bool), 0.1), "scores (10,) and members (5,) differ"),
    (lambda: tpr_at_fpr([0.1, 0.9], torch.tensor([True, False]), 0.1), "The scores must be of type Tensor, not list"),
    (lambda: lira_scores(torch.rand(4, 10), torch.rand(4, 9) > 0.5), "scores (4, 10) and members (4, 9) differ"),
    (lambda: lira_scores(torch.rand(1, 10), torch.rand(1, 10) > 0.5), "from at least 2 models"),
    (lambda: lira_scores(torch.rand(10), torch.rand(10) > 0.5), "Got shape (10,)"),
]


@pytest.mark.parametrize("call, message", BAD_ATTACK_INPUTS)
def test_bad_attack_inputs_are_one_clear_line(call, message):
    with pytest.raises(DistillsetError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("pipeline, bad, message", [
    ("dm", dict(model="mlpp"), "Unknown model 'mlpp'"),
    ("dm", dict(epochs=-1), "'epochs' parameter of MembershipAudit must be an int >= 0"),
    ("dm", dict(augment="flipp"), "Unknown augmentation family 'flipp'"),
    ("dm", dict(augment=3), "'augment' parameter of MembershipAudit"),
    ("dm", dict(device="gpu"), "'device' parameter must be"),
    ("dm", dict(params=[1]), "'params' parameter of MembershipAudit must be None or an instance of dict"),
    ("full", dict(model=["mlp", "lenet"]), "'model' parameter of MembershipAudit must be an instance of str or dict"),
    ("full", dict(params={"iterations": 5}), "'full' pipeline trains on the members as they are"),
])
def test_audit_refuses_bad_settings_before_any_model(digits, pipeline, bad, message, monkeypatch):
    from distillset.evaluate import Evaluator
    from distillset.methods import METHODS

    monkeypatch.setattr(METHODS.get("dm"), "fit", lambda *a, **k: pytest.fail("distilled before refusing"))
    monkeypatch.setattr(Evaluator, "score", lambda *a, **k: pytest.fail("trained before refusing"))
    settings = dict(pool_size=40, n_models=3, ipc=1, model="mlp", epochs=1, augment=None,
                    params={"iterations": 1, "model": "mlp"} if pipeline == "dm" else None)
    with pytest.raises(DistillsetError) as e:
        MembershipAudit(pipeline, **{**settings, **bad}).fit(digits)
    assert message in str(e.value) and "\n" not in str(e.value)
