"""Test helpers that ship with the library (the stand-in model zoo)."""
