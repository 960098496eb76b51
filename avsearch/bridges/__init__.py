"""Optional bridges to other NAS toolkits (each needs its extra, e.g. ``avsearch[nni]``); the core never imports them."""
