#!/bin/sh
# The example application's deploy command (`deploy_command` in ferry.toml): "installs" release
# VERSION on example host HOST by copying its artifact into .ferry/hosts/HOST/. A real one would
# pull the image by its digest and restart the service.
#   examples/app/deploy.sh HOST VERSION
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir="$here/../../.ferry/hosts/$1"
mkdir -p "$dir"
cp "$here/app-$2.txt" "$dir/app.txt.new"
mv "$dir/app.txt.new" "$dir/app.txt"
