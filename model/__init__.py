"""ropegpt's model: single-device PyTorch code that imports nothing but torch.

Read model/attention.py first, then model/gpt.py, then model/generate.py. (Nothing is imported here, so that
`python -m model.attention` runs the file as a script without a warning.)
"""
