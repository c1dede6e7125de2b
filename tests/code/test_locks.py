"""The two locks agree: requirements.lock (the dev venv, and the pins training logs with the model)
and requirements/serve.lock (what the image installs, so what every server loads). Both come from
`make locks`; the serving lock is compiled with the dev lock as constraints, and these tests fail
when either was edited or regenerated alone."""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from model.data import PROJECT_ROOT
from model.packaging import LOCK_PATH, RUNTIME_PACKAGES, locked_versions, pip_requirements

SERVE_IN = PROJECT_ROOT / "requirements" / "serve.in"
SERVE_LOCK = PROJECT_ROOT / "requirements" / "serve.lock"


def test_every_package_pinned_in_both_locks_has_one_version():
    dev, serve = locked_versions(LOCK_PATH), locked_versions(SERVE_LOCK)
    differing = {
        name: (dev[name], serve[name]) for name in dev.keys() & serve.keys() if dev[name] != serve[name]
    }
    assert differing == {}, f"(dev lock, serve lock) pins differ: {differing}; run `make locks`"


def test_the_serve_lock_pins_only_packages_the_dev_lock_pins():
    extra = locked_versions(SERVE_LOCK).keys() - locked_versions(LOCK_PATH).keys()
    assert extra == set(), f"only in requirements/serve.lock: {sorted(extra)}; add them to requirements.in"


def test_the_models_logged_requirements_are_what_the_servers_load():
    serve = locked_versions(SERVE_LOCK)
    logged = {canonicalize_name(Requirement(line).name): Requirement(line) for line in pip_requirements()}
    assert set(logged) == {canonicalize_name(name) for name in RUNTIME_PACKAGES}
    mismatched = {
        name: str(requirement)
        for name, requirement in logged.items()
        if name not in serve or serve[name] not in requirement.specifier
    }
    assert mismatched == {}, (
        f"logged with the model but not pinned alike in requirements/serve.lock: {mismatched}"
    )


def test_the_serve_lock_pins_every_package_serve_in_names():
    named = set()
    for line in SERVE_IN.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            named.add(canonicalize_name(Requirement(text).name))
    missing = named - locked_versions(SERVE_LOCK).keys()
    assert missing == set(), (
        f"named in requirements/serve.in but not pinned: {sorted(missing)}; run `make locks`"
    )
