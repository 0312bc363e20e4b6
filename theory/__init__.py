"""Theory for featdrop: a linear contrastive model of feature suppression and feature dropout (see
linear_model.py)."""
