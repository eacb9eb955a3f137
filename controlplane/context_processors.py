"""Template context for the UI shell."""


def shell(request):
    return {}
