"""The campaign config: typed, frozen dataclasses (``schema``, the only defaults), the parser
(``parse``) and serialisation, fingerprint and diff (``store``)."""
