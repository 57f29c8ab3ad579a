"""Fuzzing the .nic reader: every mutant decodes to its header's size or raises a NicError.

The generator and the per-decode hang bound live in ``benchmarks/fuzz_nic.py`` (which
runs thousands of cases); this test runs a few hundred per model, including every
truncation of the file, so it stays fast.
"""

from __future__ import annotations

import collections

import pytest

from nic_lib import container
from benchmark_modules import load_benchmark

#: Mutants per model beyond the exhaustive truncations.
CASES = 250
#: Seed of the mutation RNG (fixed: a failure is reproducible by its case number).
SEED = 20240601

fuzz_nic = load_benchmark("fuzz_nic")


@pytest.mark.parametrize("name", fuzz_nic.MODELS)
def test_mutants_decode_to_header_size_or_raise_nic_errors(name):
    model = fuzz_nic.tiny_model(name)
    valid = fuzz_nic.valid_file(model)
    assert fuzz_nic.classify(valid, model) == fuzz_nic.DECODED
    cases = [("truncate", valid[:k]) for k in range(len(valid))]
    cases += list(fuzz_nic.mutants(valid, CASES, SEED))
    outcomes = collections.Counter()
    for kind, mutant in cases:
        try:
            outcomes[fuzz_nic.classify(mutant, model)] += 1
        except Exception as exc:  # noqa: BLE001  report which mutant broke the reader
            pytest.fail(f"{kind} mutant of {len(mutant)} bytes raised "
                        f"{type(exc).__name__}: {exc} (not a NicError)")
    print(f"{name}: {len(cases)} cases: {dict(outcomes)}")
    assert sum(outcomes.values()) == len(cases)
    # the forged-stream mutants reach the entropy decoder, which must have run
    assert outcomes[fuzz_nic.DECODED] + outcomes["NicDecodeError"] > 0
    assert outcomes["NicFormatError"] > 0 and set(outcomes) <= {
        fuzz_nic.DECODED, *(c.__name__ for c in (
            container.NicFormatError, container.NicVersionError,
            container.NicModelMismatchError, container.NicDecodeError))}


def test_every_mutation_kind_changes_the_file():
    model = fuzz_nic.tiny_model("mbt2018-mean")
    valid = fuzz_nic.valid_file(model)
    for kind, mutant in fuzz_nic.mutants(valid, len(fuzz_nic.KINDS), SEED):
        assert mutant != valid, kind
