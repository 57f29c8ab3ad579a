"""Test helpers that ship with the library (the stand-in model zoo, the .nic fuzzer, a run that ends as a session does)."""
