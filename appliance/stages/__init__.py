"""One subpackage (or module) per stage, each exposing its `STAGE`; `order` lists them."""
