"""One module per `fastft` verb: each parses nothing, checks its input, does the work and writes the results."""
