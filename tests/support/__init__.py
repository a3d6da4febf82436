"""Helpers the tests of several folders share: a local S3 server (`storage`), generated media and extract configs
(`extract`), tiny models and shards for training (`training`, `models`), evaluation shards and checkpoints
(`evaluation`), build-qa inputs (`qa`), encoder towers (`encoders`), and the real third-party samples
(`real_data`, `real_tokenizer`). A helper used by one folder only lives beside its tests; fixtures shared by the
files of one folder live in that folder's `conftest.py`."""
