"""Several processes (torch.distributed, gloo on 127.0.0.1): the same set as one process, checkpoints that
move between world sizes, methods that cannot split refused, and the CLI under torchrun."""
import json
import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from distillset import get_method, load_dataset
from distillset.synthetic import SyntheticSet

# one process vs two: the same draws, different batch shapes per forward, so float32 rounding differs a little
ATOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, name, params, out, stop_at, split=True):
    import contextlib
    import faulthandler

    import torch.distributed as dist

    from distillset import distributed

    faulthandler.enable(open(f"{out}.rank{rank}.fault", "w"), all_threads=True)  # where a rare SIGABRT hits
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        def stop(method, it, losses):
            if stop_at is not None and it + 1 == stop_at:
                raise KeyboardInterrupt

        method = get_method(name, **params)
        try:
            with distributed.enabled() if split else contextlib.nullcontext():
                method.fit(load_dataset("digits"), callback=stop)
        except KeyboardInterrupt:
            dist.barrier()  # neither rank tears gloo down while the other is still in a collective
            return
        torch.save({"images": method.synthetic_.images, "history": method.history_}, f"{out}.rank{rank}.pt")
        dist.barrier()  # the same on a finished run (as the CLI does): an early teardown aborted a rank in CI
    finally:
        dist.destroy_process_group()


def run_processes(name, params, tmp_path, world=2, stop_at=None, split=True) -> list[dict]:
    """fit ``name`` in ``world`` processes (work split across them unless ``split`` is False); each process's
    images and history."""
    out = str(tmp_path / name)
    try:
        mp.spawn(_worker, args=(world, free_port(), name, params, out, stop_at, split), nprocs=world, join=True)
    except mp.ProcessExitedException as e:
        # a rank now and then dies with SIGABRT ("terminate called without an active exception"), cause not
        # found (gloo teardown suspected): 3 full CI runs in two stops, never when the test runs alone (0 of 27,
        # 15 of them beside two busy processes). Tolerated only once every rank has written its result, so a
        # crash during the work still fails; the rank's Python stacks (faulthandler) go into the message
        written = stop_at is None and all(os.path.exists(f"{out}.rank{r}.pt") for r in range(world))
        fault = f"{out}.rank{e.error_index}.fault"
        stacks = open(fault).read() if os.path.exists(fault) else "(none written)"
        if e.signal_name != "SIGABRT" or not written:
            raise AssertionError(f"rank {e.error_index} died; its Python stacks:\n{stacks}") from e
        warnings.warn(f"rank {e.error_index} died with SIGABRT after every rank had written its result; "
                      f"its Python stacks:\n{stacks}")
    if stop_at is not None:
        return []
    return [torch.load(f"{out}.rank{r}.pt") for r in range(world)]


CASES = {"dm": dict(ipc=2, iterations=4, batch_real=16),
         "dc": dict(ipc=1, iterations=2, batch_real=8, lr_img=0.01),
         "dd": dict(ipc=1, iterations=2, steps=2, n_nets=4, net_init="random", batch_real=4, model="mlp"),
         "idm": dict(ipc=1, iterations=3, batch_real=8, net_num=2, net_generate_interval=2, fetch_net_num=1,
                     model_train_steps=1, batch_train=32)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_make_the_one_process_set(name, tmp_path, digits):
    params = dict(CASES[name], random_state=0, device="cpu", progress=False, log_every=1)
    ranks = run_processes(name, params, tmp_path)
    assert torch.equal(ranks[0]["images"], ranks[1]["images"])  # every process holds the same set
    one = get_method(name, **params).fit(digits)
    torch.testing.assert_close(ranks[0]["images"], one.synthetic_.images, atol=ATOL, rtol=0)
    with warnings.catch_warnings():  # "iterations=0 returns its initialisation": here that is the point
        warnings.simplefilter("ignore")
        init = get_method(name, **{**params, "iterations": 0}).fit(digits).synthetic_.images
    assert (one.synthetic_.images - init).abs().max() > 100 * ATOL  # the sets moved far beyond the tolerance
    # the logged loss is the whole loss (the ranks' shares summed), as one process logs it
    torch.testing.assert_close(torch.tensor(ranks[0]["history"]["loss"]), torch.tensor(one.history_["loss"]),
                               rtol=1e-4, atol=1e-5)


def test_a_process_group_alone_changes_nothing(tmp_path, digits):
    """Outside distributed.enabled() (e.g. DDP code calling fit on its ranks) each process runs the whole fit."""
    params = dict(CASES["dm"], random_state=0, device="cpu", progress=False)
    ranks = run_processes("dm", params, tmp_path, split=False)
    one = get_method("dm", **params).fit(digits)
    assert all(torch.equal(r["images"], one.synthetic_.images) for r in ranks)
    assert ranks[0]["history"]["loss"] == one.history_["loss"]  # its own loss, not a sum across processes


def test_a_two_process_checkpoint_resumes_in_one(tmp_path, digits):
    params = dict(ipc=1, iterations=6, batch_real=16, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ckpt"),
                  random_state=0, device="cpu", progress=False)
    run_processes("dm", params, tmp_path, stop_at=3)  # both stop after iteration 3; rank 0 wrote iteration 2
    resumed = get_method("dm", **params).fit(digits, resume=True)
    whole = get_method("dm", **{**params, "checkpoint_dir": None}).fit(digits)
    torch.testing.assert_close(resumed.synthetic_.images, whole.synthetic_.images, atol=ATOL, rtol=0)


def test_methods_that_cannot_split_are_refused(tmp_path):
    with pytest.raises(Exception) as e:
        run_processes("dance", dict(ipc=1, iterations=1, device="cpu", progress=False), tmp_path)
    assert "cannot split its work across 2 processes" in str(e.value)


def test_torchrun_cli_writes_one_run_equal_to_one_process(tmp_path):
    common = ["distill", "--iterations", "3", "--eval-runs", "2", "--eval-epochs", "2", "--quiet", "--device", "cpu",
              "--param", "batch_real=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(free_port()), "-m", "distillset", *common, "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[:2500]  # the ranks' own messages come first, torchrun's summary last
    assert two.stdout.count("distilling digits") == 1 and "split across 2 processes" in two.stdout  # rank 0 prints
    one = subprocess.run([sys.executable, "-m", "distillset", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = SyntheticSet.load(tmp_path / "two" / "synthetic"), SyntheticSet.load(tmp_path / "one" / "synthetic")
    torch.testing.assert_close(a.images, b.images, atol=ATOL, rtol=0)
    r2, r1 = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("two", "one"))
    assert r2["processes"] == 2 and r1["processes"] == 1
    # networks 0 and 1 trained on different processes, the same networks as in one process
    acc2, acc1 = r2["results"]["dm"]["convnet"]["accuracies"], r1["results"]["dm"]["convnet"]["accuracies"]
    assert acc2 == pytest.approx(acc1, abs=1.0) and len(acc2) == 2


def _children_with_rank(parent: int, rank: int) -> list[int]:
    """Processes below ``parent`` whose environment says RANK=rank (torchrun's workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and ppid == parent:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc (Linux)")
def test_a_failed_process_ends_the_run_and_keeps_the_last_checkpoint(tmp_path):
    import time

    out = tmp_path / "run"
    args = ["distill", "--iterations", "200", "--checkpoint-every", "5", "--no-eval", "--quiet", "--device", "cpu",
            "--param", "batch_real=16", "--out", str(out)]
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                            "127.0.0.1", "--master-port", str(free_port()), "-m", "distillset", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = out / "checkpoint" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.2)
    victims = _children_with_rank(run.pid, 1)
    assert checkpoint.exists() and victims, "the run never wrote a checkpoint"
    os.kill(victims[0], 9)  # rank 1 dies mid-run
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "failed" in err.lower()  # torchrun ends every process and names the failure
    assert not (out / "result.json").exists()
    # the checkpoint rank 0 last wrote is whole: one process resumes from it
    resume = subprocess.run([sys.executable, "-m", "distillset", *args, "--resume"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resume.returncode == 0, resume.stderr[-1000:]
    assert json.loads((out / "result.json").read_text())["params"]["iterations"] == 200


def test_torchrun_refuses_commands_that_do_not_split(tmp_path):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(free_port()), "-m", "distillset", "continual", "--out",
                          str(tmp_path / "cl")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "runs in one process; under torchrun only distill and evaluate" in run.stderr
    assert not (tmp_path / "cl").exists()


def test_an_out_held_by_another_command_is_refused_on_every_rank(tmp_path):
    """Rank 0 alone takes the --out folder; when it is refused, rank 1 names the same reason (not a hang
    until torchrun tears it down)."""
    fcntl = pytest.importorskip("fcntl", reason="the --out lock is an flock (not on Windows)")
    out = tmp_path / "held"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another command writing there
    try:
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                              "127.0.0.1", "--master-port", str(free_port()), "-m", "distillset", "distill",
                              "--iterations", "1", "--no-eval", "--quiet", "--device", "cpu", "--out", str(out)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(fd)
    assert run.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: error: Another distillset command is writing to --out" in run.stderr, run.stderr[-2000:]
    assert not any(out.iterdir())
