"""Reading trained encoders: encoder specs (``encoders``), the suppression report for any encoder
(``suppression``), re-probing finished runs (``reprobe``) and the interactive view explorer (``explorer``)."""
