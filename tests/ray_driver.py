"""A build through a Ray cluster, run as a process of its own by ``test_build_ray.py`` (Ray's client keeps
per-process state, such as the authentication mode read when it is first imported, that no test should
share with another): ``python ray_driver.py ADDRESS RAW OUT RESOURCES_JSON UNSCHEDULABLE_S``.

Its tasks are the build's own, wrapped by :func:`audited`; it prints the build's summary as JSON and exits
with the build's exit code.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def audited(forbidden: tuple[str, ...]):
    """The build's Ray task, recording in its record every file it opens, lists or looks at (``stat``) under
    ``forbidden`` folders, and, to show the hook works, how many it opened in its private folder."""

    def audited_task(task, box, shipment):
        import sys as _sys

        from onflame.dataset.build_ray import remote_task

        if not hasattr(_sys, "_onflame_opened"):
            _sys._onflame_opened = []
            seen = _sys._onflame_opened.append

            def hook(event, args):
                if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
                    seen(os.path.abspath(os.fsdecode(args[0])))

            _sys.addaudithook(hook)
            for name in ("stat", "lstat"):  # not audit events: looked at through os's functions
                real = getattr(os, name)

                def looked_at(path, *args, _real=real, **kwargs):
                    if isinstance(path, (str, bytes, os.PathLike)):
                        seen(os.path.abspath(os.fsdecode(path)))
                    return _real(path, *args, **kwargs)

                setattr(os, name, looked_at)
        del _sys._onflame_opened[:]
        result = remote_task(task, box, shipment)
        opened = list(_sys._onflame_opened)
        result["record"]["opened_driver_paths"] = [p for p in opened if p.startswith(forbidden)]
        result["record"]["opened_shipped_copies"] = sum("onflame-ship-" in p for p in opened)
        return result

    return audited_task


def main(address: str, raw: Path, out: Path, resources: dict, unschedulable_s: float) -> int:
    import ray

    from onflame.dataset.build import build_subset
    from onflame.synthetic.head import make_head_model

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    deadline = time.monotonic() + 120
    while any(ray.cluster_resources().get(k, 0) < v for k, v in resources.items()):  # the node has joined
        if time.monotonic() > deadline:
            raise SystemExit("the Ray node with the build's resources never joined")
        time.sleep(0.1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks need not import this file
    task_fn = audited((str(raw), str(out)))
    try:
        rep = build_subset("STIRLING", raw / "STIRLING", out, make_head_model(), executor="ray", address=address,
                           ray_files="ship", executor_options={"resources": resources, "task_fn": task_fn,
                                                               "unschedulable_s": unschedulable_s})
    finally:
        ray.shutdown()
    print(json.dumps(rep.to_dict()))
    return rep.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])))
