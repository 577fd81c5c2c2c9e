"""Passwords holding quotes, `<`, spaces or Hydra's special characters are masked everywhere: the
URL's userinfo is parsed, not matched by character class, and the resolved config's passwords are
remembered (with their escaped forms) before anything is logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import harness.runtime.secrets
from harness.runtime.secrets import install_log_filter, mask_secrets, remember_secrets
from tests.faults.conftest import TINY

#: password → the Hydra override that sets it (quoted so Hydra's grammar accepts it)
PASSWORDS = {
    "Q1'uote": '"postgresql://u:Q1\'uote@db.example/x"',
    'Q2"dq<lt': "'postgresql://u:Q2\"dq<lt@db.example/x'",
    "Q3 space": "'postgresql://u:Q3 space@db.example/x'",
    "Q4,c=m:n": "'postgresql://u:Q4,c=m:n@db.example/x'",
}


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(harness.runtime.secrets, "_known", set())


@pytest.mark.parametrize("password", ["Q1'uote", 'Q2"dq<lt', "Q4,c=m:n"])
def test_a_url_is_masked_whatever_its_password_holds(fresh, password):
    url = f"postgresql://u:{password}@db.example/x"
    for text in (f"cannot open {url}: refused", json.dumps({"uri": url}), repr(url), f"<{url}>"):
        masked = mask_secrets(text)
        assert password not in masked, masked
        assert "db.example/x" in masked


def test_a_query_password_with_quotes_is_masked_whole(fresh):
    masked = mask_secrets("url postgresql://u@db.example/x?password=it's<x&sslmode=require")
    assert "it's" not in masked and "'s<x" not in masked and "sslmode=require" in masked


def test_hydra_escaped_overrides_are_masked(fresh):
    line = r"#0 : study.storage=postgresql\://u\:Hx7pass@db.example/x method=l1"
    assert "Hx7pass" not in mask_secrets(line)


@pytest.mark.parametrize("password", PASSWORDS)
def test_remembered_passwords_are_masked_in_every_escaped_form(fresh, password):
    remember_secrets([f"study.storage={PASSWORDS[password]}"])  # the CLI's overrides
    hydra = "".join(f"\\{c}" if c in "\\()[]{}:=, " else c for c in password)
    for form in (password, json.dumps(password), repr(password), hydra):
        assert password not in mask_secrets(f"driver said: {form} rejected")
        assert hydra not in mask_secrets(f"launcher: {hydra}")


def test_handlers_added_later_only_see_masked_records(fresh, caplog):
    remember_secrets({"tracking": {"uri": "postgresql://u:Late5pw@h/db"}})
    install_log_filter()  # then a library (Hydra, in a sweep) replaces the handlers
    logging.getLogger("some.library").warning("connecting with %s", "Late5pw")
    assert "Late5pw" not in caplog.text and "***" in caplog.text


def test_an_unreachable_tracking_uri_with_a_quoted_password_is_one_masked_line(run_main, tmp_path):
    r = run_main("run", *TINY, "tracking.uri=\"postgresql://u:Q5'x<y@127.0.0.1:1/db\"",
                 f"outputs={tmp_path}")  # fmt: skip
    assert r.code == 1 and "Q5'x<y" not in r.stderr + r.stdout
    assert "postgresql://u:***@127.0.0.1:1/db" in r.stderr


def _files(root: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_real_run_with_hostile_passwords_leaks_none(cli, tmp_path):
    overrides = [
        f"study.storage={PASSWORDS['Q1' + chr(39) + 'uote']}",
        f"+tracking.tags.db={PASSWORDS['Q2' + chr(34) + 'dq<lt']}",
        f"+notify.webhook={PASSWORDS['Q3 space']}",
        f"+notify.mirror={PASSWORDS['Q4,c=m:n']}",
    ]
    result = cli("run", *TINY, *overrides, f"outputs={tmp_path}")
    assert result.code == 0, result.stderr[-3000:]
    texts = {"stdout": result.stdout, "stderr": result.stderr, **_files(tmp_path)}
    leaks = [f"{where}: {p}" for where, t in texts.items() for p in PASSWORDS if p in t]
    assert not leaks
    record = json.loads(result.stdout)
    plan = json.loads((Path(record["artifacts"]) / "plan.json").read_text())
    assert plan["meta"]["config"]["study"]["storage"] == "postgresql://u:***@db.example/x"


@pytest.mark.slow
def test_a_sweep_leaves_no_password_in_hydra_files_or_logs(cli, tmp_path):
    out = tmp_path / "out"
    r = cli(
        "run", "-m", "seed=0,1", *TINY, f"outputs={out}",
        f"+notify.webhook={PASSWORDS['Q4,c=m:n']}",
        "+tracking.tags.db='postgresql://u:Hx9pass@db.example/x'",
    )  # fmt: skip
    assert r.code == 0, r.stderr[-3000:]
    texts = {"stdout": r.stdout, "stderr": r.stderr, **_files(out)}
    assert any(name.endswith("multirun.yaml") for name in texts)
    assert any(name.endswith("overrides.yaml") for name in texts)
    leaks = [
        f"{where}: {p}" for where, t in texts.items() for p in ("Q4,c=m:n", "Hx9pass") if p in t
    ]
    assert not leaks


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_study_with_hostile_passwords_leaks_none_and_resumes_with_new_points(
    cli, tmp_path, postgres_url
):
    import optuna
    import sqlalchemy as sa

    from tests.faults.conftest import TINY_STUDY

    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text("CREATE DATABASE mlfq"))
        c.execute(sa.text("CREATE DATABASE pbq"))
    host = postgres_url.split("@", 1)[1].rsplit("/", 1)[0]
    storage = f"postgresql://postgres:Pq1'it<s@{host}/pbq"
    tracking = f'postgresql://postgres:Pq2"dq@{host}/mlfq'
    args = [*TINY_STUDY, f"outputs={tmp_path}", f'study.storage="{storage}"',
            f"tracking.uri='{tracking}'", "study.enqueue_defaults=false"]  # fmt: skip
    texts = {}
    for n in (1, 2):  # created, then resumed
        r = cli("study", *args, f"study.n_trials={n}", timeout=900)
        assert r.code == 0, r.stderr[-3000:]
        texts |= {f"stdout{n}": r.stdout, f"stderr{n}": r.stderr}
    texts |= _files(tmp_path)
    for db in ("pbq", "mlfq"):  # every row of every table of both stores
        engine = sa.create_engine(postgres_url.rsplit("/", 1)[0] + f"/{db}")
        with engine.connect() as c:
            for table in sa.inspect(engine).get_table_names():
                texts[f"{db}.{table}"] = repr(c.execute(sa.text(f'SELECT * FROM "{table}"')).all())
        engine.dispose()
    assert "pbq.study_user_attributes" in texts and "mlfq.params" in texts
    leaks = [f"{w}: {p}" for w, t in texts.items() for p in ("Pq1'it<s", 'Pq2"dq') if p in t]
    assert not leaks
    pg = optuna.storages.RDBStorage(postgres_url.rsplit("/", 1)[0] + "/pbq")
    (name,) = optuna.get_all_study_names(pg)
    params = [
        tuple(sorted(t.params.items()))
        for t in optuna.load_study(study_name=name, storage=pg).trials
    ]
    assert len(params) == 2 and len(set(params)) == 2
