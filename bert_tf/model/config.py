"""`BertConfig`: the hyper-parameters of a BERT encoder, and reading/writing them.

Three JSON dialects are read by :meth:`BertConfig.from_json_file`:

* Google's ``bert_config.json`` (google-research/bert). Its ``"hidden_act":
  "gelu"`` means the **tanh approximation** of GELU (that is what Google's
  TF1 code computes), so it is recorded here as ``hidden_act="gelu_tanh"``.
* Hugging Face's ``config.json`` (``model_type``/``architectures``/
  ``transformers_version`` keys). There ``"gelu"`` is the **exact erf** form and
  stays ``"gelu"``; ``"gelu_new"``, ``"gelu_pytorch_tanh"`` (and ``"gelu_fast"``,
  another tanh-style approximation) become ``"gelu_tanh"``.
* Our own file written by :meth:`BertConfig.to_json_file` (key
  ``"_format": "bert_tf"``): names are taken as written.

Activation names used here: ``"gelu"`` (exact, ``0.5 x (1 + erf(x / sqrt 2))``),
``"gelu_tanh"`` (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``), ``"relu"``,
``"silu"``/``"swish"``, ``"tanh"``.
"""

import dataclasses
import json
import os
from bert_tf import atomic

GELU_EXACT = "gelu"
GELU_TANH = "gelu_tanh"
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swish", "tanh")

# Hugging Face activation names -> ours.
_HF_ACT = {
    "gelu": GELU_EXACT,
    "gelu_python": GELU_EXACT,
    "gelu_new": GELU_TANH,
    "gelu_pytorch_tanh": GELU_TANH,
    "gelu_fast": GELU_TANH,
    "relu": "relu",
    "silu": "silu",
    "swish": "swish",
    "tanh": "tanh",
}
# Google's modeling.get_activation names -> ours ("gelu" there is the tanh form).
_GOOGLE_ACT = {"gelu": GELU_TANH, "relu": "relu", "tanh": "tanh", "linear": None}

_FORMAT_KEY = "_format"
_GOOGLE_ACT_KEY = "bert_tf_hidden_act"  # extra key we add when writing Google files


@dataclasses.dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder.

    Defaults are BERT-base (uncased vocab). ``hidden_act`` is explicit about
    the GELU variant: ``"gelu"`` = exact erf (Hugging Face), ``"gelu_tanh"`` =
    tanh approximation (what Google's checkpoints were trained with).

    Example:

    >>> from bert_tf import BertConfig
    >>> cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
    ...                  num_attention_heads=4, intermediate_size=64)
    >>> cfg.head_size
    8
    >>> BertConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = GELU_EXACT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
            setattr(self, name, value)
        self.initializer_range = float(self.initializer_range)
        self.layer_norm_eps = float(self.layer_norm_eps)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    # ------------------------------------------------------------ dicts
    def to_dict(self):
        """Plain dict of the fields (our names, e.g. ``hidden_act="gelu_tanh"``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict of our field names; unknown keys are an error."""
        d = dict(d)
        d.pop(_FORMAT_KEY, None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown BertConfig keys: {unknown}")
        return cls(**d)

    # ------------------------------------------------------------ JSON files
    @staticmethod
    def detect_format(d, path=None):
        """'bert_tf', 'huggingface' or 'google' for a parsed config dict."""
        if d.get(_FORMAT_KEY) == "bert_tf":
            return "bert_tf"
        if any(k in d for k in ("model_type", "architectures", "transformers_version")):
            return "huggingface"
        if path is not None and os.path.basename(path) == "config.json":
            return "huggingface"
        return "google"

    @classmethod
    def from_json_file(cls, path, source=None):
        """Read Google's ``bert_config.json``, Hugging Face's ``config.json`` or ours.

        Args:
          path: the JSON file.
          source: ``"google"``, ``"huggingface"`` or ``"bert_tf"``; by default
            detected from the keys (HF files carry ``model_type``/
            ``architectures``/``transformers_version``; ours ``"_format"``;
            anything else is read as Google's).

        Google's ``"gelu"`` is recorded as ``"gelu_tanh"``; HF's ``"gelu"`` as
        ``"gelu"`` (exact). See the module docstring.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BERT config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        source = source or cls.detect_format(d, path)
        try:
            if source == "bert_tf":
                return cls.from_dict(d)
            if source == "huggingface":
                return cls._from_hf(d)
            if source == "google":
                return cls._from_google(d)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: bad {source} BERT config: {e}") from None
        raise ValueError(f"unknown config source {source!r}")

    @classmethod
    def _common(cls, d, act):
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in d]
        if missing:
            raise KeyError(f"missing keys {missing}")
        defaults = cls()
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            intermediate_size=d["intermediate_size"],
            hidden_act=act,
            hidden_dropout_prob=d.get("hidden_dropout_prob", defaults.hidden_dropout_prob),
            attention_probs_dropout_prob=d.get("attention_probs_dropout_prob",
                                               defaults.attention_probs_dropout_prob),
            max_position_embeddings=d.get("max_position_embeddings", defaults.max_position_embeddings),
            type_vocab_size=d.get("type_vocab_size", defaults.type_vocab_size),
            initializer_range=d.get("initializer_range", defaults.initializer_range),
            layer_norm_eps=d.get("layer_norm_eps", d.get("layer_norm_epsilon", defaults.layer_norm_eps)),
        )

    @classmethod
    def _from_hf(cls, d):
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type is {model_type!r}, only 'bert' is supported")
        pos = d.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"position_embedding_type {pos!r} is not supported (only 'absolute')")
        act = d.get("hidden_act", "gelu")
        if act not in _HF_ACT:
            raise ValueError(f"unsupported hidden_act {act!r}")
        return cls._common(d, _HF_ACT[act])

    @classmethod
    def _from_google(cls, d):
        if _GOOGLE_ACT_KEY in d:  # written by us: the exact variant is recorded
            act = d[_GOOGLE_ACT_KEY]
        else:
            name = d.get("hidden_act", "gelu")
            act = _GOOGLE_ACT.get(name, "")
            if not act:
                raise ValueError(f"unsupported hidden_act {name!r}")
        # Google's BertModel always uses layer-norm epsilon 1e-12.
        return cls._common(d, act)

    def to_json_file(self, path, format="bert_tf"):
        """Write the config as JSON.

        ``format="bert_tf"`` (default) writes our field names (read back exactly).
        ``format="google"`` writes a ``bert_config.json`` Google's code can read:
        ``hidden_act`` is spelled ``"gelu"`` for both GELU variants (Google's
        code only has the tanh one) and the exact variant is kept in an extra
        key ``bert_tf_hidden_act`` that our reader honours. ``format=
        "huggingface"`` writes a transformers ``config.json``.
        """
        d = self.to_dict()
        if format == "bert_tf":
            d = {_FORMAT_KEY: "bert_tf", **d}
        elif format == "google":
            act = d.pop("hidden_act")
            d["hidden_act"] = "gelu" if act.startswith("gelu") else act
            d[_GOOGLE_ACT_KEY] = act
        elif format == "huggingface":
            act = d["hidden_act"]
            d["hidden_act"] = {"gelu_tanh": "gelu_pytorch_tanh"}.get(act, act)
            d.update({"model_type": "bert", "architectures": ["BertModel"],
                      "position_embedding_type": "absolute", "pad_token_id": 0})
        else:
            raise ValueError(f"format must be 'bert_tf', 'google' or 'huggingface', got {format!r}")
        return atomic.write_json(path, d)
