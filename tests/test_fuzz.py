"""Fuzzing the .nic reader: every mutant decodes to its header's size or raises a NicError.

Decompression bombs (forged headers announcing large images) are decoded within a budget:
refused up front when their estimated memory exceeds it, decoded when it does not.

The generator and the per-decode hang bound live in ``nic_lib/testing/fuzz.py``
(``benchmarks/fuzz.py`` runs thousands of cases of it); this test runs a few hundred
per model, including every truncation of the file, so it stays fast.
"""

from __future__ import annotations

import collections

import pytest

from nic_lib import container
from nic_lib.testing import fuzz

#: Mutants per model beyond the exhaustive truncations.
CASES = 250
#: Seed of the mutation RNG (fixed: a failure is reproducible by its case number).
SEED = 20240601


@pytest.mark.parametrize("name", fuzz.MODELS)
def test_mutants_decode_to_header_size_or_raise_nic_errors(name):
    model = fuzz.tiny_model(name)
    valid = fuzz.valid_file(model)
    assert fuzz.classify(valid, model) == fuzz.DECODED
    cases = [("truncate", valid[:k]) for k in range(len(valid))]
    cases += list(fuzz.mutants(valid, CASES, SEED))
    outcomes = collections.Counter()
    for kind, mutant in cases:
        try:
            outcomes[fuzz.classify(mutant, model)] += 1
        except Exception as exc:  # noqa: BLE001  report which mutant broke the reader
            pytest.fail(f"{kind} mutant of {len(mutant)} bytes raised "
                        f"{type(exc).__name__}: {exc} (not a NicError)")
    print(f"{name}: {len(cases)} cases: {dict(outcomes)}")
    assert sum(outcomes.values()) == len(cases)
    # the forged-stream mutants reach the entropy decoder, which must have run
    assert outcomes[fuzz.DECODED] + outcomes["NicDecodeError"] > 0
    assert outcomes["NicFormatError"] > 0 and set(outcomes) <= {
        fuzz.DECODED, *(c.__name__ for c in (
            container.NicFormatError, container.NicVersionError,
            container.NicModelMismatchError, container.NicDecodeError,
            container.NicBudgetError))}
    # the forged large headers (decompression bombs) reach the budget check
    assert outcomes["NicBudgetError"] > 0


def test_every_mutation_kind_changes_the_file():
    model = fuzz.tiny_model("mbt2018-mean")
    valid = fuzz.valid_file(model)
    for kind, mutant in fuzz.mutants(valid, len(fuzz.KINDS), SEED):
        assert mutant != valid, kind


@pytest.mark.parametrize("name", fuzz.MODELS)
def test_forged_maximum_size_header_is_refused_by_the_budget(name):
    model = fuzz.tiny_model(name)
    valid = fuzz.valid_file(model)
    side, most = container.MAX_IMAGE_SIDE, container.MAX_IMAGE_PIXELS
    for height in (most // side, 4096, side):
        bomb = fuzz.forge_size(valid, height, most // height)
        assert container.read_header(bomb).height * container.read_header(bomb).width == most
        assert fuzz.classify(bomb, model) == "NicBudgetError"
    over = fuzz.forge_size(valid, side + 1, 16)
    assert fuzz.classify(over, model) == "NicFormatError"


def test_forged_header_within_the_budget_decodes_to_its_size():
    model = fuzz.tiny_model("mbt2018")
    forged = fuzz.forge_size(fuzz.valid_file(model), 200, 330)
    assert fuzz.classify(forged, model) == fuzz.DECODED


def test_bombs_are_part_of_the_fuzzing():
    model = fuzz.tiny_model("mbt2018")
    valid = fuzz.valid_file(model)
    kinds = collections.Counter(kind for kind, _ in fuzz.mutants(valid, 400, SEED))
    assert kinds["forged-large"] > 0
    sizes = [container.read_header(m).height * container.read_header(m).width
             for kind, m in fuzz.mutants(valid, 400, SEED)
             if kind == "forged-large" and _parses(m)]  # a side over the limit does not
    assert max(sizes) == container.MAX_IMAGE_PIXELS and min(sizes) < 2**20


def _parses(data: bytes) -> bool:
    try:
        container.read_header(data)
    except container.NicFormatError:
        return False
    return True
