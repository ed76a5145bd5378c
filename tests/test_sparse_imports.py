"""`adabatch.sparse` without numpy and scipy, the error types it shares, its renamed names."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import adabatch.errors
import adabatch.sparse
from adabatch.sparse import aggregate as aggregate_function
from adabatch.sparse import experiment, parallel, sequential

# Run first in the child: a finder that makes the named top-level packages unimportable, as if
# they were not installed. It answers with a spec whose loader refuses, rather than raising
# from find_spec, because torch probes optional packages with importlib.util.find_spec (a spec
# without an origin reads as "nothing to skip" there); torch then only warns that it cannot
# initialise NumPy.
_BLOCK = """
import importlib.machinery, sys, warnings
BLOCKED = {blocked!r}
class Refuse:
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)
    def exec_module(self, module):
        raise AssertionError("unreachable")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, Refuse())
        return None
sys.meta_path.insert(0, Block())
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
"""

_EMBEDDINGS_WORK = """
import torch
from torch import nn

import adabatch.sparse.embedding
from adabatch.sparse import AdaBatchEmbeddings, DivergenceError, EmbeddingAggregation, WorkerError

emb = nn.Embedding(5, 2)
opt = AdaBatchEmbeddings(torch.optim.SGD(emb.parameters(), lr=0.1), emb)
emb(torch.tensor([[1, 1], [1, 3]])).sum().backward()
opt.step()
assert isinstance(opt.aggregation, EmbeddingAggregation)
assert not any(m.partition(".")[0] in BLOCKED for m in sys.modules), "numpy/scipy imported"
"""

_SOLVERS_SAY_WHAT_TO_INSTALL = """
def expect_hint(statement):
    try:
        exec(statement, {{}})
    except ImportError as exc:
        message = str(exc)
        assert 'pip install "adabatch[sparse]"' in message, message
        assert "{missing} is missing" in message, message
    else:
        raise AssertionError(f"{{statement}} did not raise ImportError")

expect_hint("from adabatch.sparse import sgd")
expect_hint("import adabatch.sparse; adabatch.sparse.aggregate")
expect_hint("import adabatch.sparse.sequential")
expect_hint("from adabatch.sparse.scipy_bridge import to_scipy")
expect_hint("from adabatch.sparse.experiment import run_comparison")
try:
    adabatch.sparse.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name must stay an AttributeError")
print("ok")
"""


@pytest.mark.parametrize(
    ("blocked", "missing"), [(("numpy", "scipy"), "numpy"), (("scipy",), "scipy")]
)
def test_embeddings_work_without_the_sparse_extra(blocked: tuple[str, ...], missing: str) -> None:
    code = "\n".join(
        textwrap.dedent(part)
        for part in (
            _BLOCK.format(blocked=set(blocked)),
            _EMBEDDINGS_WORK,
            _SOLVERS_SAY_WHAT_TO_INSTALL.format(missing=missing),
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_errors_have_one_home() -> None:
    assert adabatch.sparse.DivergenceError is adabatch.errors.DivergenceError
    assert sequential.DivergenceError is adabatch.errors.DivergenceError
    assert issubclass(adabatch.sparse.DivergenceError, FloatingPointError)
    assert adabatch.sparse.WorkerError is adabatch.errors.WorkerError
    assert parallel.WorkerError is adabatch.errors.WorkerError
    assert issubclass(adabatch.sparse.WorkerError, RuntimeError)


def test_the_package_exports_functions_not_submodules() -> None:
    # `adabatch.sparse.aggregate` is both a submodule and a function; the function wins.
    assert callable(aggregate_function) and aggregate_function.__name__ == "aggregate"
    assert set(adabatch.sparse.__all__) <= set(dir(adabatch.sparse))


def test_renamed_constants() -> None:
    assert adabatch.sparse.AGGREGATION_RULES == ("adabatch", "mean")
    assert experiment.COMPARED == {
        "mean": ("mean", False),
        "adabatch": ("adabatch", False),
        "mean_scaled": ("mean", True),
    }
    assert not hasattr(adabatch.sparse, "RULES") and not hasattr(experiment, "RULES")
