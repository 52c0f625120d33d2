"""The DVC data registry: a git + DVC repository holding every accepted batch.

This is DVC's "data registry" pattern. Each dataset is a folder
``data/<dataset>/`` of one parquet file per accepted batch, tracked by
``data/<dataset>.dvc``; a manifest ``manifests/<dataset>.json`` (plain git)
lists the batches with their content hashes. Every ingest is one git commit and
one tag ``<dataset>-vNNNN``, and its data is pushed to the DVC remote (a local
folder in the embedded mode, MinIO/S3 in the stack). A data version is
therefore an ordinary git revision that ``dvc get`` can fetch anywhere.

The registry lives in Loopline's state folder, not in the project's own git
repo: the platform commits to it on every ingest, which must never touch a
developer's working tree.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    import pandas as pd

TAG_PATTERN = re.compile(r"^(?P<dataset>[a-z0-9_]+)-v(?P<number>\d{4,})$")
DATA_VERSION_PATTERN = r"^(latest|v\d{4,}|[0-9a-f]{7,40})$"


class RegistryError(LooplineError, RuntimeError):
    """The data registry cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class DataVersion:
    """An exact, fetchable version of a dataset: the lineage a model records."""

    dataset: str
    version: str  # "v0003"
    rev: str  # git commit of the registry
    md5: str  # DVC's content hash of the dataset folder
    batches: int
    rows: int

    @property
    def tag(self) -> str:
        return f"{self.dataset}-{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    sha256: str
    source_name: str
    rows: int
    ingested_for: str  # the Airflow run that ingested it (logical date / run id), never wall-clock
    version: str = ""  # the data version that first held it ("" in manifests written before this field)


class DataRegistry:
    def __init__(self, root: Path, remote_url: str) -> None:
        self.root = root
        self.remote_url = remote_url

    # -- plumbing -------------------------------------------------------------------------
    def _git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RegistryError(f"git {' '.join(args)} failed in {self.root}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _repo(self):  # -> dvc.repo.Repo, imported lazily: dvc is heavy
        from dvc.repo import Repo

        return Repo(str(self.root))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers (concurrent ingests, manual CLI use) on one registry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- setup ----------------------------------------------------------------------------
    def init(self) -> None:
        """Create the registry (git + DVC + default remote). Safe to call again."""
        from dvc.repo import Repo

        with self.locked():
            if not (self.root / ".git").exists():
                self._git("init", "-q", "-b", "main")
                self._git("config", "user.name", "Loopline")
                self._git("config", "user.email", "loopline@localhost")
            if not (self.root / ".dvc").exists():
                Repo.init(str(self.root))
            if "://" not in self.remote_url:
                Path(self.remote_url).mkdir(parents=True, exist_ok=True)
            self._set_remote()
            (self.root / "data").mkdir(exist_ok=True)
            (self.root / "manifests").mkdir(exist_ok=True)
            # Only DVC's own files: whatever else is uncommitted is a crashed ingest's, for _recover to undo.
            self._git("add", "--", *(p for p in (".dvc", ".dvcignore") if (self.root / p).exists()))
            if self._git("diff", "--cached", "--name-only"):
                self._git("commit", "-q", "-m", "Initialise Loopline data registry")

    def _set_remote(self) -> None:
        config_path = self.root / ".dvc" / "config"
        config = config_path.read_text() if config_path.exists() else ""
        if f"url = {self.remote_url}\n" in config:
            return
        with self._repo().config.edit() as conf:
            conf["core"]["remote"] = "storage"
            conf["remote"]["storage"] = {"url": self.remote_url}

    # -- reading --------------------------------------------------------------------------
    def manifest(self, dataset: str, rev: str | None = None) -> list[BatchRecord]:
        rel = f"manifests/{dataset}.json"
        if rev is None:
            path = self.root / rel
            text = path.read_text() if path.exists() else "[]"
        else:
            try:
                text = self._git("show", f"{rev}:{rel}")
            except RegistryError:
                text = "[]"
        return [BatchRecord(**item) for item in json.loads(text)]

    def known_hashes(self, dataset: str) -> set[str]:
        return {b.sha256 for b in self.manifest(dataset)}

    def versions(self, dataset: str) -> list[str]:
        tags = self._git("tag", "--list", f"{dataset}-v*").split()
        return sorted((t.removeprefix(f"{dataset}-") for t in tags if TAG_PATTERN.match(t)), key=lambda v: int(v[1:]))

    def resolve(self, dataset: str, ref: str = "latest") -> DataVersion:
        """Turn 'latest', 'v0003' or a registry commit into an exact DataVersion."""
        if not re.match(DATA_VERSION_PATTERN, ref):
            raise RegistryError(f"data version {ref!r} is not 'latest', 'vNNNN' or a commit hash")
        known = self.versions(dataset)
        if not known:
            raise RegistryError(f"dataset {dataset!r} has no versions yet: ingest a batch first")
        if ref == "latest":
            version = known[-1]
        elif ref.startswith("v"):
            if ref not in known:
                raise RegistryError(f"dataset {dataset!r} has no version {ref}; known: {known}")
            version = ref
        else:
            matches = [v for v in known if self._git("rev-list", "-n1", f"{dataset}-{v}").startswith(ref)]
            if not matches:
                raise RegistryError(f"commit {ref} is not a tagged version of {dataset!r}")
            version = matches[0]
        tag = f"{dataset}-{version}"
        rev = self._git("rev-list", "-n1", tag)
        dvc_file = yaml.safe_load(self._git("show", f"{rev}:data/{dataset}.dvc"))
        out = dvc_file["outs"][0]
        batches = self.manifest(dataset, rev)
        return DataVersion(
            dataset=dataset,
            version=version,
            rev=rev,
            md5=out["md5"],
            batches=len(batches),
            rows=sum(b.rows for b in batches),
        )

    def pull(self, version: DataVersion, dest: Path) -> Path:
        """Fetch exactly this version from the DVC remote into dest (what `dvc get --rev` does)."""
        from dvc.repo import Repo

        marker = dest / ".complete"
        if marker.exists() and marker.read_text() == version.md5:
            return dest
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Repo.get(str(self.root), f"data/{version.dataset}", out=str(dest), rev=version.rev)
        marker.write_text(version.md5)
        return dest

    def load(self, version: DataVersion, dest: Path) -> pd.DataFrame:
        import pandas as pd

        folder = self.pull(version, dest)
        files = sorted(folder.glob("*.parquet"))
        if not files:
            raise RegistryError(f"{version.tag} holds no batches")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    # -- writing --------------------------------------------------------------------------
    @contextmanager
    def stage(self, dataset: str) -> Iterator[RegistryStage]:
        """Lock the registry, repair what a crash left, and stage changes to one dataset.

        Nothing is written until ``RegistryStage.commit``; leaving the block without it
        (or crashing) leaves the registry exactly at its last tagged version.
        """
        with self.locked():
            self._recover(dataset)
            yield RegistryStage(self, dataset)

    def commit_batches(
        self, dataset: str, batches: list[tuple[BatchRecord, pd.DataFrame]], message: str
    ) -> DataVersion | None:
        """Add batches as one new version; batches already present (by content hash) are skipped.

        Returns None when nothing was new, so a re-run creates no empty version.
        """
        with self.stage(dataset) as stage:
            known = {r.sha256 for r in stage.records}
            for rec, df in batches:
                if rec.sha256 not in known:
                    known.add(rec.sha256)
                    stage.add(rec, df)
            return stage.commit(message) if stage.changed else None

    def _recover(self, dataset: str) -> None:
        """Make HEAD the only truth: drop uncommitted writes, tag a commit a crash left untagged, push."""
        self._git("reset", "-q", "--hard", "HEAD")
        self._git("clean", "-q", "-f", "-d", "--", "manifests")  # a first manifest is untracked until committed
        (self.root / "manifests").mkdir(exist_ok=True)
        folder = self.root / "data" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        if (self.root / "data" / f"{dataset}.dvc").exists():
            self._repo().checkout(targets=[str(folder)], force=True)  # restore batches rewritten but not committed
        committed = {f"{b.batch_id}.parquet" for b in self.manifest(dataset)}
        for path in folder.iterdir():
            if path.name not in committed:
                path.unlink()
        subject = self._git("log", "-1", "--format=%s")
        match = re.match(rf"^{re.escape(dataset)} (v\d{{4,}}): ", subject)
        if match and match.group(1) not in self.versions(dataset):
            self._git("tag", f"{dataset}-{match.group(1)}")  # crashed between commit and tag
        self._repo().push()  # finishes a push a crash may have cut short (a no-op when in sync)

    def _write_version(self, stage: RegistryStage, message: str) -> DataVersion:
        from loopline.core.faults import crash_point

        dataset, folder = stage.dataset, self.root / "data" / stage.dataset
        existing = self.versions(dataset)
        version = f"v{(int(existing[-1][1:]) if existing else 0) + 1:04d}"
        for batch_id, df in stage.writes.items():
            tmp = folder / f".{batch_id}.parquet.tmp"
            df.to_parquet(tmp, index=False)
            os.replace(tmp, folder / f"{batch_id}.parquet")
        records = [replace(r, version=r.version or version) for r in stage.records]
        (self.root / "manifests" / f"{dataset}.json").write_text(
            json.dumps([asdict(r) for r in records], indent=2) + "\n"
        )
        crash_point("write")
        repo = self._repo()
        repo.add([str(folder)])
        self._git("add", f"data/{dataset}.dvc", "data/.gitignore", f"manifests/{dataset}.json")
        self._git("commit", "-q", "-m", f"{dataset} {version}: {message}")
        crash_point("commit")
        self._git("tag", f"{dataset}-{version}")
        crash_point("tag")
        repo.push()
        crash_point("push")
        return self.resolve(dataset, version)

    def push(self) -> None:
        """Push everything committed to the remote (recovers a crash between commit and push)."""
        with self.locked():
            self._repo().push()


class RegistryStage:
    """Changes to one dataset, staged in memory under the registry's lock (see ``DataRegistry.stage``)."""

    def __init__(self, registry: DataRegistry, dataset: str) -> None:
        self.registry, self.dataset = registry, dataset
        self.records: list[BatchRecord] = registry.manifest(dataset)
        self.writes: dict[str, pd.DataFrame] = {}  # batch_id -> frame to (re)write
        self._folder = registry.root / "data" / dataset

    @property
    def changed(self) -> bool:
        return bool(self.writes)

    def frame(self, batch_id: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        if batch_id in self.writes:
            df = self.writes[batch_id]
            return df[columns] if columns else df
        return pd.read_parquet(self._folder / f"{batch_id}.parquet", columns=columns)

    def key_index(self, columns: list[str]) -> pd.DataFrame:
        """The key columns of every stored and staged row, with the batch each is in (``_batch``)."""
        import pandas as pd

        parts = [self.frame(r.batch_id, columns).assign(_batch=r.batch_id) for r in self.records]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*columns, "_batch"])

    def rows_of(self, batch_ids: list[str]):
        import pandas as pd

        return pd.concat([self.frame(b) for b in batch_ids], ignore_index=True)

    def add(self, record: BatchRecord, frame: pd.DataFrame) -> None:
        self.records.append(record)
        self.writes[record.batch_id] = frame

    def drop_keys(self, columns: list[str], keys: set[str]) -> int:
        """Remove stored rows whose key is in keys (they are being replaced); returns how many."""
        from loopline.ingestion.data_rules import key_of

        dropped = 0
        for n, record in enumerate(self.records):
            df = self.frame(record.batch_id)
            hit = key_of(df, columns).isin(keys)
            if hit.any():
                dropped += int(hit.sum())
                self.writes[record.batch_id] = df[~hit].reset_index(drop=True)
                self.records[n] = replace(record, rows=int((~hit).sum()))
        return dropped

    def commit(self, message: str) -> DataVersion:
        return self.registry._write_version(self, message)
