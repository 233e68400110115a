"""`adit models`: the pretrained models that ship (or can be downloaded), with their cards.

    adit models                      # one line per model: name, kinds, shipped or URL, description
    adit models show NAME            # the model card (data, steps, CPU-hours, recipe, metrics)
    adit models download NAME        # fetch a non-shipped model into the cache, checked by sha256
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add ``models`` to the ``adit`` parser."""
    p = subparsers.add_parser("models", help="list the pretrained models and show their cards",
                              description="Pretrained ADiT models, loaded by name (`adit sample --model NAME`).")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    show = sub.add_parser("show", help="print the model card of NAME")
    show.add_argument("name", help="model name (see `adit models`)")
    fetch = sub.add_parser("download", help="download the weights of NAME (models that do not ship)")
    fetch.add_argument("name", help="model name (see `adit models`)")
    p.set_defaults(handler=run_models)


def run_models(args) -> int:
    """Handler of ``adit models``."""
    from adit_torch.pretrained import DEFAULT_MODEL, MODELS, download, get_model, model_card

    if args.action == "show":
        get_model(args.name)
        print(model_card(args.name))
        return 0
    if args.action == "download":
        print(f"{args.name}: {download(args.name)}")
        return 0
    width = max(len(name) for name in MODELS)
    for name, model in MODELS.items():
        where = "shipped" if model.shipped else model.url
        default = " (default)" if name == DEFAULT_MODEL else ""
        conditions = "conditions: " + ", ".join(("num_atoms", *model.conditions))
        print(f"{name:<{width}}  {'+'.join(model.kinds):<16}  {where}  {model.description}{default}  [{conditions}]")
    print("\n`adit models show NAME` prints a model's card; `adit sample --model NAME` samples it.")
    return 0
