from carelake.cli.main import app

app()
