"""dapt's config files are TOML: Python's tomllib must read every config in
the repository (tests/runner/configs/*.toml, configs/*.toml) to the same
values dapt resolves, dapt's resolved TOML must be valid TOML with the same
values and a fixed point of dapt's parser, and invalid TOML must be refused
by both.

    python3 test_toml_compat.py CONFIG_DRIVER REPO_ROOT
"""
import glob
import os
import subprocess
import sys
import tempfile
import tomllib


def resolve(driver, path, *overrides):
    r = subprocess.run([driver, path, *overrides], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def expected_points(mix):
    if "schedule" in mix:
        return [[float(p), float(f)] for p, f in mix["schedule"]]
    f = float(mix.get("domain_frac", 0.3))
    if "upsample_start" in mix:
        u, g = float(mix["upsample_start"]), float(mix["upsample_domain_frac"])
        return [[0.0, f], [u, f], [u, g], [1.0, g]]
    return [[0.0, f], [1.0, f]]


def check_file(driver, path):
    with open(path, "rb") as f:
        src = tomllib.load(f)
    rc, out, err = resolve(driver, path)
    assert rc == 0, f"{path}: dapt refused it: {err}"
    res = tomllib.loads(out)
    n = 0
    for section, keys in src.items():
        assert section in res, f"{path}: [{section}] missing from the resolved config"
        if section == "mix":
            got = res["mix"]["schedule"]
            assert got == expected_points(keys), f"{path}: mix {got} != {expected_points(keys)}"
            n += 1
            continue
        for k, v in keys.items():
            assert k in res[section], f"{path}: {section}.{k} missing from the resolved config"
            r = res[section][k]
            assert r == v and type(r) in (type(v), float), f"{path}: {section}.{k}: tomllib {v!r}, dapt {r!r}"
            n += 1
    # the resolved config is a fixed point of dapt's parser
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as t:
        t.write(out)
    try:
        rc2, out2, err2 = resolve(driver, t.name)
    finally:
        os.unlink(t.name)
    assert rc2 == 0 and out2 == out, f"{path}: resolved config does not re-resolve to itself: {err2}"
    print(f"{os.path.relpath(path)}: {n} values agree with tomllib")


INVALID = [
    "[train]\nsteps = 0100\n",
    "[train]\nlr = 1.\n",
    "[train]\nlr = .5\n",
    "[run]\nname = \"abc\n",
    "[run]\nname = \"a\\qb\"\n",
    "[train]\nlr = 0.1\nlr = 0.2\n",
    "[train]\nsteps = 10 20\n",
    "[train] x\n",
    "[train]\nsteps 100\n",
    "[train]\nlr = 0.1\n[eval]\nevery = 1\n[train]\nsteps = 3\n",
]


def check_invalid(driver):
    for text in INVALID:
        try:
            tomllib.loads(text)
            raise AssertionError(f"tomllib accepted {text!r}: fix the test")
        except tomllib.TOMLDecodeError:
            pass
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as t:
            t.write(text)
        try:
            rc, _, err = resolve(driver, t.name)
        finally:
            os.unlink(t.name)
        # refused: exit 1 (a negative rc is a signal) with FILE: first
        assert rc == 1 and err.startswith(t.name + ":"), \
            f"dapt did not refuse invalid TOML {text!r} with exit 1 and its file: exit {rc}, {err!r}"
    print(f"{len(INVALID)} invalid TOML snippets refused by both")


def main():
    driver, root = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(root, "tests/runner/configs/*.toml")) +
                   glob.glob(os.path.join(root, "configs/*.toml")))
    assert files, "no config files found"
    sweeps = []
    for path in files:
        with open(path, "rb") as f:
            if "sweep" in tomllib.load(f):  # a `dapt law sweep` file (tests/law)
                sweeps.append(path)
                continue
        check_file(driver, path)
    print(f"{len(sweeps)} sweep file(s) parsed by tomllib, left to tests/law")
    files = [f for f in files if f not in sweeps]
    check_invalid(driver)
    print(f"{len(files) + 1} passed, 0 failed")


if __name__ == "__main__":
    main()
