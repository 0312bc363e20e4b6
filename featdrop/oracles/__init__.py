"""Label oracles, independent of the encoder under study: small supervised readers of the overlay's label and
of the main label (``reader``), trained once per overlay configuration and cached (``store``). A view whose
label an oracle reads on the clean input but not on the view has *destroyed* that label: the paper's feature
dropout, measured without the encoder's own (weak) probe."""
