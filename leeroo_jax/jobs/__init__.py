"""The jobs behind the entry points (train.py, score.py): each wires data, models, training
and evaluation together, so no lower package needs to import a higher one."""
