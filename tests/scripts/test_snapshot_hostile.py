"""Hostile pickles against scripts/import_pytorch_snapshot.py (issue 8): a memory snapshot is plain
dicts, lists, strings and numbers, so any pickle that asks for a global (a class or a function: the
way a pickle runs code on load) must be refused before anything runs, with one line and exit 2, and
no trace written. Covered: every pickle protocol and every opcode that resolves a global (GLOBAL,
STACK_GLOBAL, INST, OBJ, NEWOBJ, NEWOBJ_EX, REDUCE, the EXT1/EXT2/EXT4 extension registry), persistent
ids, and globals hidden deep inside an otherwise valid snapshot. Each payload would create a marker
file if it ran; the tests check that it never exists."""

import copyreg
import importlib.util
import os
import pathlib
import pickle
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import snapshot_fixtures as fx  # noqa: E402

SOURCE = pathlib.Path(os.environ.get("TIERMARK_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
SCRIPT = SOURCE / "scripts" / "import_pytorch_snapshot.py"


def run_import(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def load_module():
    spec = importlib.util.spec_from_file_location("import_pytorch_snapshot_hostile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_refused(tmp_path, content, bad_name="evil.pickle", words=("global",)):
    """Runs the importer on `content`; it must exit 2 with one line naming the file, write nothing and
    run nothing (no marker file)."""
    bad = tmp_path / bad_name
    bad.write_bytes(content)
    out = tmp_path / "out.csv"
    result = run_import(bad, "-o", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"import_pytorch_snapshot: {bad}: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists(), "the pickle ran code"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name not in (bad_name, "ran")] == [], "a temporary file was left"


def touch_command(tmp_path):
    return f"touch {tmp_path / 'ran'}"


class SystemCall:
    """Pickles as os.system(touch marker) through REDUCE."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


class PopenCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (subprocess.Popen, (self.command.split(),))


class Plain:
    """An ordinary object: pickled through copyreg._reconstructor (protocols 0, 1) or NEWOBJ (2+)."""


class WithNewArgsEx:
    """Pickled through NEWOBJ_EX (protocol 4+: keyword arguments to __new__)."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __getnewargs_ex__(self):
        return ((), {"x": 1})


PAYLOADS = {
    "os_system": lambda cmd: SystemCall(cmd),
    "eval": lambda cmd: EvalCall(cmd),
    "subprocess_popen": lambda cmd: PopenCall(cmd),
    "plain_object": lambda cmd: Plain(),
    "newobj_ex": lambda cmd: WithNewArgsEx(),
    # Harmless-looking globals are refused too: the rule is "no global", not a deny list.
    "frozenset": lambda cmd: frozenset({1}),
    "ordered_dict": lambda cmd: __import__("collections").OrderedDict(a=1),
    "datetime": lambda cmd: __import__("datetime").datetime(2024, 1, 1),
    "getattr": lambda cmd: getattr,
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_pickle_naming_a_global_is_refused_at_every_protocol(tmp_path, protocol, payload):
    value = PAYLOADS[payload](touch_command(tmp_path))
    if payload == "frozenset" and protocol >= 4:
        pytest.skip("protocol 4 writes frozensets with FROZENSET, no global")
    if payload == "newobj_ex" and protocol < 2:
        pytest.skip("NEWOBJ_EX needs protocol 2 or later")
    assert_refused(tmp_path, pickle.dumps(value, protocol=protocol))


# Hand-written opcode streams, so each opcode that resolves a global is covered whatever pickle.dumps
# would choose. MARKER is replaced by the touch command.
OPCODE_STREAMS = {
    "GLOBAL_REDUCE": b"cos\nsystem\n(VMARKER\ntR.",
    "INST": b"(VMARKER\nios\nsystem\n.",
    "OBJ": b"\x80\x02(cos\nsystem\nVMARKER\no.",
    "STACK_GLOBAL_REDUCE": b"\x80\x04\x8c\x02os\x8c\x06system\x93VMARKER\n\x85R.",
    "NEWOBJ": b"\x80\x02cbuiltins\nobject\n)\x81.",
    "NEWOBJ_EX": b"\x80\x04\x8c\x08builtins\x8c\x06object\x93)}\x92.",
    # A global buried in an otherwise plain structure: a dict whose value is a call.
    "GLOBAL_IN_DICT": b"(dVdevice_traces\n(lp0\ncos\nsystem\n(VMARKER\ntRas.",
    # BUILD on a global: __setstate__ could run code.
    "GLOBAL_BUILD": b"\x80\x02cbuiltins\nobject\n)\x81}b.",
}


@pytest.mark.parametrize("name", sorted(OPCODE_STREAMS))
def test_every_opcode_that_resolves_a_global_is_refused(tmp_path, name):
    content = OPCODE_STREAMS[name].replace(b"MARKER", touch_command(tmp_path).encode())
    assert_refused(tmp_path, content)


@pytest.mark.parametrize("opcode", [b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00"], ids=["EXT1", "EXT2", "EXT4"])
def test_extension_codes_are_refused(tmp_path, opcode):
    # In a fresh interpreter no extension code is registered: refused as a malformed pickle.
    assert_refused(tmp_path, b"\x80\x02" + opcode + b".", words=("not a memory snapshot pickle",))


def test_a_registered_extension_still_goes_through_find_class(tmp_path):
    # Where a program registered os.system as an extension (copyreg.add_extension), EXT1 names it
    # without GLOBAL; the importer's unpickler must still refuse it.
    module = load_module()
    code = 0x7EADBEEF
    copyreg.add_extension("os", "system", code)
    try:
        bad = tmp_path / "ext.pickle"
        bad.write_bytes(b"\x80\x02\x84" + code.to_bytes(4, "little") + b"(V" + touch_command(tmp_path).encode() + b"\ntR.")
        with pytest.raises(module.InputError, match="global"):
            module.load_snapshot(str(bad))
    finally:
        copyreg.remove_extension("os", "system", code)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("content", [b"P0\n.", b"\x80\x02X\x01\x00\x00\x000Q."], ids=["PERSID", "BINPERSID"])
def test_persistent_ids_are_refused(tmp_path, content):
    assert_refused(tmp_path, content, words=("not a memory snapshot pickle",))


def test_a_global_deep_inside_a_valid_snapshot_is_refused(tmp_path):
    snapshot = fx.simple_snapshot()
    event = snapshot["device_traces"][0][0]
    event["frames"] = list(event.get("frames", [])) + [{"name": SystemCall(touch_command(tmp_path)), "filename": "x.py", "line": 1}]
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        assert_refused(tmp_path, pickle.dumps(snapshot, protocol=protocol))


def test_a_refused_pickle_leaves_an_existing_trace_untouched(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("op,id,size\n")
    bad = tmp_path / "evil.pickle"
    bad.write_bytes(pickle.dumps(SystemCall(touch_command(tmp_path))))
    result = run_import(bad, "-o", out)
    assert result.returncode == 2
    assert out.read_text() == "op,id,size\n"
    assert not (tmp_path / "ran").exists()


def test_the_same_snapshot_without_the_global_imports(tmp_path):
    # The refusals above are about the global, not the structure around it.
    good = tmp_path / "good.pickle"
    good.write_bytes(pickle.dumps(fx.simple_snapshot(), protocol=pickle.HIGHEST_PROTOCOL))
    result = run_import(good, "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.csv").exists()
