"""Writes lose nothing: special files are never replaced; the outputs of one command are committed
together or not at all; signals remove temporary files (and stale ones are swept); full disks and
read-only folders name the file and the cause; modes follow the umask; identical commands give
byte-identical files and random-weight models are seeded."""
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402

FAST = ["--no-latency", "--no-verify"]
PREFIX = ".prunestudio-tmp-"


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@contextlib.contextmanager
def tmpfs(path, options):
    """A small tmpfs mounted at ``path`` (root only; the test is skipped elsewhere)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder):
    """Use up every byte of a small file system."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"x" * size)


def temps(folder):
    return [n for n in os.listdir(folder) if n.startswith(PREFIX) or ".tmp" in n]


# ----------------------------------------------------------------------------- special files

def _special(kind, p, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("the link's target")
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        os.symlink(target, p)
    elif kind == "dangling_symlink":
        os.symlink(tmp_path / "nowhere.pt", p)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("creating a device file needs root")
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))


WHAT = {"fifo": "a FIFO (named pipe)", "symlink": "a symbolic link",
        "dangling_symlink": "a symbolic link", "device": "a character device"}


@pytest.mark.parametrize("flag,name", [("-o", "m.pt"), ("--report", "r.json"),
                                       ("--project", "w.psproj")])
@pytest.mark.parametrize("kind", sorted(WHAT))
def test_force_never_replaces_a_special_file(kind, flag, name, tmp_path, capsys):
    p = tmp_path / name
    _special(kind, p, tmp_path)
    before = os.lstat(p)
    rc, out, err = run(["prune", "demo", *FAST, flag, str(p), "--force"], capsys)
    assert rc == 2, (out, err)
    assert err.strip().splitlines() == [
        f"error: output {p} is {WHAT[kind]}, not a regular file: refusing to replace it (even "
        f"with --force); choose another output name"]
    after = os.lstat(p)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert (tmp_path / "target.txt").read_text() == "the link's target"
    assert temps(tmp_path) == []


def test_a_file_that_turns_special_before_the_commit_is_not_replaced(tmp_path):
    from core.errors import PruneStudioError
    from core.io.atomic import OutputSet, atomic_write
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with pytest.raises(PruneStudioError, match="is a FIFO"):
        with OutputSet() as outs:
            atomic_write(str(a), lambda t: open(t, "w").write("new a"), force=True)
            atomic_write(str(b), lambda t: open(t, "w").write("new b"), force=True)
            os.mkfifo(b)  # appears between staging and commit
            outs.commit()
    assert a.read_text() == "old a" and stat.S_ISFIFO(os.lstat(b).st_mode)
    assert temps(tmp_path) == []


# ----------------------------------------------------------------------------- all or nothing

def test_a_failed_commit_restores_what_it_had_replaced(tmp_path, monkeypatch):
    import errno

    from core.errors import PruneStudioError
    from core.io.atomic import OutputSet, atomic_write
    a, b, d = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "dir"
    a.write_text("old a")
    b.write_text("old b")
    d.mkdir()
    (d / "config.json").write_text("old dir")
    real = os.replace

    def flaky(src, dst):  # moving the new b into place fails
        if str(dst) == str(b) and os.path.basename(src).startswith(PREFIX) and \
                not src.endswith(".prunestudio-old"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)
    monkeypatch.setattr(os, "replace", flaky)
    from core.io.atomic import atomic_write_dir

    def new_dir(t):
        with open(os.path.join(t, "config.json"), "w") as f:
            f.write("new dir")
    with pytest.raises(PruneStudioError) as e:
        with OutputSet() as outs:
            atomic_write(str(a), lambda t: open(t, "w").write("new a"), force=True)
            atomic_write_dir(str(d), new_dir)
            atomic_write(str(b), lambda t: open(t, "w").write("new b"), force=True)
            outs.commit()
    assert str(e.value) == f"cannot write {b}: {os.strerror(errno.EIO)}"
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert (d / "config.json").read_text() == "old dir"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt", "dir"]



def _existing(tmp_path):
    files = {"keep.pt": b"the old model", "r.json": b'{"old": "report"}',
             "w.psproj": b'{"old": "project"}'}
    for n, data in files.items():
        (tmp_path / n).write_bytes(data)
    return files


@pytest.mark.parametrize("failing", ["--report", "--project"])
def test_a_failed_output_keeps_every_existing_file(failing, tmp_path, capsys):
    """``prune --force -o keep.pt --report <unwritable>`` used to replace keep.pt, fail on the
    report and then delete the new keep.pt: the old and the new model were both gone."""
    files = _existing(tmp_path)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        outs = {"-o": tmp_path / "keep.pt", "--report": tmp_path / "r.json",
                "--project": tmp_path / "w.psproj"}
        bad = ro / ("r.json" if failing == "--report" else "w.psproj")
        outs[failing] = bad
        argv = ["prune", "demo", *FAST, "--force"] + [x for k, v in outs.items() for x in (k, str(v))]
        rc, out, err = run(argv, capsys)
        for n, data in files.items():
            assert (tmp_path / n).read_bytes() == data, n
        assert temps(tmp_path) == []
        assert rc == 2, (out, err)
        assert err.strip().splitlines() == [
            f"error: cannot write {bad}: Read-only file system"]
        assert os.listdir(ro) == []


def test_outputs_are_replaced_together(tmp_path, capsys):
    _existing(tmp_path)
    rc, out, err = run(["prune", "demo", *FAST, "--force", "-o", str(tmp_path / "keep.pt"),
                        "--report", str(tmp_path / "r.json"), "--project",
                        str(tmp_path / "w.psproj")], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(tmp_path / "keep.pt")
    assert json.loads((tmp_path / "w.psproj").read_text())["format"] == "prunestudio.project"
    assert isinstance(torch.load(tmp_path / "keep.pt", weights_only=False), torch.nn.Module)
    assert sorted(os.listdir(tmp_path)) == ["keep.pt", "r.json", "w.psproj"]


# ----------------------------------------------------------------------------- full disks

@pytest.mark.parametrize("flag,name", [("-o", "m.pt"), ("-o", "m.pstudio"),
                                       ("--report", "r.json"), ("--project", "w.psproj")])
def test_a_full_disk_names_the_file_and_the_cause(flag, name, tmp_path, capsys):
    with tmpfs(tmp_path / "full", "size=64k") as full:
        fill(full)
        p = full / name
        rc, out, err = run(["prune", "demo", *FAST, flag, str(p)], capsys)
        assert rc == 2, (out, err)
        assert err.strip().splitlines() == [f"error: cannot write {p}: No space left on device"]
        assert sorted(os.listdir(full)) == ["filler"]


def test_a_full_disk_without_a_mount(tmp_path, monkeypatch):
    """The same for a write whose OSError torch.save hides in its own RuntimeError."""
    import errno

    from core.errors import PruneStudioError
    from core.io import tempfiles
    from core.io.torchfile import save_whole

    def full(self, b):
        self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise self.error
    monkeypatch.setattr(tempfiles.RecordingFile, "write", full)
    p = tmp_path / "m.pt"
    with pytest.raises(PruneStudioError) as e:
        save_whole(torch.nn.Linear(2, 2), str(p))
    assert str(e.value) == f"cannot write {p}: No space left on device"
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- modes

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_modes_follow_the_umask(umask, tmp_path, capsys):
    old = os.umask(umask)
    try:
        outs = ["-o", str(tmp_path / "m.pt"), "--report", str(tmp_path / "r.json"), "--project",
                str(tmp_path / "w.psproj")]
        rc, out, err = run(["prune", "demo", *FAST, *outs], capsys)
        assert rc == 0, err
        rc, out, err = run(["prune", "demo", *FAST, "-o", str(tmp_path / "m.pstudio")], capsys)
        assert rc == 0, err
        if umask == 0o027:
            rc, out, err = run(["prune", "demo", *FAST, "-o", str(tmp_path / "m.onnx")], capsys)
            assert rc == 0, err
    finally:
        os.umask(old)
    for n in os.listdir(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o666 & ~umask, n


# ----------------------------------------------------------------------------- reproducibility

def test_identical_commands_give_identical_files(tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for name in ("m.pt", "m.pstudio"):
            rc, out, err = run(["prune", "demo", *FAST, "--importance", "random", "-o",
                                str(tmp_path / d / name)], capsys)
            assert rc == 0, err
    for name in ("m.pt", "m.pstudio"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_random_weights_are_seeded():
    from core.io.project import fingerprint
    from core.io.sources import load_model
    state = torch.random.get_rng_state()
    a = fingerprint(load_model("torchvision:resnet18"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is kept
    assert fingerprint(load_model("torchvision:resnet18")) == a
    assert fingerprint(load_model("torchvision:resnet18", seed=0)) == a
    assert fingerprint(load_model("torchvision:resnet18", seed=1)) != a


def test_a_project_of_random_weights_reopens(tmp_path, capsys):
    from core.io import project as proj
    p, r = tmp_path / "w.psproj", tmp_path / "r.json"
    rc, out, err = run(["prune", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--ratio",
                        "0.3", "--seed", "3", *FAST, "--project", str(p), "--report", str(r)],
                       capsys)
    assert rc == 0, err
    assert json.loads(r.read_text())["seed"] == 3
    d = json.loads(p.read_text())
    assert d["model"]["seed"] == 3
    back = proj.load_project(str(p))
    model, ex, dg, result = proj.restore(back, verify=False)  # "model has changed" before
    assert proj.fingerprint(result.model) == d["result"]["fingerprint"]


# ----------------------------------------------------------------------------- signals

SLOW_SAVE = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
# Ctrl-C as at a terminal: a test runner started in the background (nohup, &) hands its
# children SIGINT ignored, and the CLI rightly keeps a signal it was told to ignore ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
real = torch.save
def slow(obj, f, *a, **k):
    real(obj, f, *a, **k)
    print("WRITING", flush=True)
    # in short sleeps: a signal the kernel hands to another thread (torch's OpenMP workers) does
    # not interrupt the main thread's sleep, and its Python handler runs only when that ends
    for _ in range(1200):
        time.sleep(0.1)
torch.save = slow
import main
sys.exit(main.main(sys.argv[1:]))
"""


def _killed_during_write(tmp_path, sig, argv):
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE.format(root=ROOT))
    pr = subprocess.Popen([sys.executable, str(script), *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        for line in pr.stdout:
            if line.strip() == "WRITING":
                break
        else:
            raise AssertionError(pr.stderr.read())
        pr.send_signal(sig)
        out, err = pr.communicate(timeout=60)
    finally:
        if pr.poll() is None:
            pr.kill()
            pr.wait()
    return pr.returncode, err


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_removes_the_temporary_file(sig, status, tmp_path):
    out = tmp_path / "out" / "m.pt"
    out.parent.mkdir()
    out.write_bytes(b"the old model")
    rc, err = _killed_during_write(tmp_path, sig, ["prune", "demo", *FAST, "--force", "-o",
                                                   str(out)])
    assert rc == status, err
    why = "interrupted" if sig == signal.SIGINT else "terminated by SIGTERM"
    assert err.strip().splitlines() == [
        f"error: {why}; unfinished outputs were removed, existing files are unchanged"]
    assert os.listdir(out.parent) == ["m.pt"] and out.read_bytes() == b"the old model"


def test_a_killed_write_is_swept_later(tmp_path, capsys):
    out = tmp_path / "out" / "m.pt"
    out.parent.mkdir()
    rc, err = _killed_during_write(tmp_path, signal.SIGKILL, ["prune", "demo", *FAST, "-o",
                                                              str(out)])
    assert rc == -signal.SIGKILL
    left = temps(out.parent)
    assert len(left) == 1 and left[0].startswith(PREFIX), left  # SIGKILL cannot be caught
    stale = out.parent / left[0]
    young = out.parent / f"{PREFIX}999999999-0000-young.pt"  # a dead process's, but recent
    alive = out.parent / f"{PREFIX}{os.getppid()}-0000-alive.pt"  # an old one of a live process
    for p in (young, alive):
        p.write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    for p in (stale, alive):
        os.utime(p, (hours_ago, hours_ago))
    rc, _, err = run(["prune", "demo", *FAST, "-o", str(out.parent / "n.pt")], capsys)
    assert rc == 0, err
    assert sorted(os.listdir(out.parent)) == sorted(["n.pt", young.name, alive.name])


def test_a_signal_during_the_commit_waits_for_its_end(tmp_path, monkeypatch):
    from core.io import tempfiles
    from core.io.atomic import OutputSet, atomic_write
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    real, sent = os.replace, []

    def replace(src, dst):
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
            time.sleep(0.05)  # the handler runs here, in the middle of the commit
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(tempfiles.Terminated):
        with tempfiles.signal_handlers():
            with OutputSet() as outs:
                atomic_write(str(a), lambda t: open(t, "w").write("new a"))
                atomic_write(str(b), lambda t: open(t, "w").write("new b"))
                outs.commit()
    assert a.read_text() == "new a" and b.read_text() == "new b"  # both, not one
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"] and tempfiles.committed_in_command()
