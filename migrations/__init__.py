"""Numbered SQL migrations, shipped with the package so installed copies can migrate."""
