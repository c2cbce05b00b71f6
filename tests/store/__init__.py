"""Tests of the topic store contract, run against every backend."""
