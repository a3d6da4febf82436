"""The streaming loader as the data and grouping tests build it."""
from train.data.loader import TrainLoader


def loader(shards, tok, **kw):
    args = dict(tokenizer=tok, conv_format="v1", micro_batch=4, max_tokens=512, num_workers=0, buffer=5, seed=3)
    return TrainLoader(shards, **{**args, **kw})
