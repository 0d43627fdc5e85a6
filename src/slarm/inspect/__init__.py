"""slarm-inspect: check raw episodes before converting them, plot and replay them."""
