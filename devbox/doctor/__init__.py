"""``devbox doctor``: every check that decides whether bind-mounted files stay yours."""
