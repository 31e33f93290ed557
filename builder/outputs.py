"""Track a run's outputs in a DVC repository and push them to its remote (``envyard run --push-outputs``).

Through DVC's Python API (``Repo.add``, ``Repo.push``): the outputs get ``.dvc`` files beside them (commit those)
and their bytes go to the remote, so the result manifest's outputs can be fetched like any other DVC data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from envyard.builder.errors import DataError, DataUnavailableError

__all__ = ["push_outputs"]


def push_outputs(workdir: Path, outputs: Sequence[str], remote: str | None = None,
                 remote_config: Mapping[str, str] | None = None) -> dict[str, object]:
    """``dvc add`` every output (relative to ``workdir``, inside a DVC repository) and ``dvc push`` them."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    if not outputs:
        raise DataError("--push-outputs needs --outputs PATH", field="outputs", hint="declare what to push")
    try:
        with Repo(os.fspath(workdir), remote=remote,
                  remote_config=dict(remote_config) if remote_config else None) as repo:
            targets = [os.fspath((workdir / output).absolute()) for output in outputs]
            stages = repo.add(targets)
            pushed = repo.push(targets, remote=remote)
            root = Path(repo.root_dir)
            files = sorted(Path(stage.path).relative_to(root).as_posix() for stage in stages)
    except NotDvcRepoError:
        raise DataError(f"{workdir} is not inside a DVC repository", file=workdir,
                        hint="run in a DVC repository (dvc init), or leave out --push-outputs") from None
    except DvcException as exc:
        raise DataUnavailableError(f"cannot push the outputs: {exc}", file=workdir,
                                   hint="check the DVC remote and its credentials") from None
    return {"dvc_files": files, "pushed": pushed}
