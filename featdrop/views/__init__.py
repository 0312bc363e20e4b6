"""Views: how raw items become encoder inputs and the two views of a contrastive pair. The modality record
(``modality``: images or audio, and how each is loaded), hand-designed expert views for images (``expert``)
and for audio (``audio``, with the log-mel features), and the learned, adversarial viewmaker
(``viewmaker``)."""
