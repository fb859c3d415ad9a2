#!/bin/sh
# The sshd target of docker-compose.yml: its host key and the key the
# gateway logs in with come from deploy/secrets (go run ./deploy/gensecrets).
# The image has no host key of its own (the Dockerfile removes the ones
# openssh-server generates at install time).
set -eu
key=/etc/ssh/ssh_host_ed25519_key
install -m 600 /run/secrets/sshd_host_key "$key"
# sshd reads the public half beside the private key and complains on every
# start when it does not match; derive it from the key itself.
ssh-keygen -y -f "$key" >"$key.pub"
chmod 644 "$key.pub"
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
install -m 600 -o deploy -g deploy /run/secrets/box_key_pub /home/deploy/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -o HostKey="$key" -o PasswordAuthentication=no -o PermitRootLogin=no
