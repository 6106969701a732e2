"""Optional edges to other tools (Label Studio, FiftyOne); nothing below imports them."""
