"""ropegpt's data pipeline: download, tokenize, prepare once, sample batches."""
