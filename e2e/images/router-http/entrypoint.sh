#!/bin/bash
# Writes nginx's configuration from the environment and runs nginx:
#   :8080  GET /health -> 200; everything else redirects to https (or, with
#          ROUTER_ENABLE_HTTPS=false, is routed like :8443);
#   :8443  TLS with ROUTER_SSL_CERTIFICATE_PATH / ROUTER_SSL_CERTIFICATE_KEY_PATH
#          (files under /etc/nginx/ssl, mounted read-only); when they are
#          absent and ROUTER_SSL_AUTOGENERATE=1, a self-signed certificate for
#          SELFHOSTED_DOMAIN is generated at start under /etc/nginx/selfsigned.
# Upstreams are resolved per request through Docker's DNS (127.0.0.11), so
# nginx starts, and answers 502 for that route, when a service is missing.
set -euo pipefail

log() { echo "router-http: $*" >&2; }

if [[ ${1:-nginx} != nginx ]]; then
	exec "$@" # e.g. bash, for debugging
fi

domain=${SELFHOSTED_DOMAIN:-localhost}
cert=${ROUTER_SSL_CERTIFICATE_PATH:-/etc/nginx/ssl/carto.crt}
key=${ROUTER_SSL_CERTIFICATE_KEY_PATH:-/etc/nginx/ssl/carto.key}
https=true
case ${ROUTER_ENABLE_HTTPS:-true} in false | 0 | no) https=false ;; esac

if [[ $https == true && ! ( -f $cert && -f $key ) ]]; then
	if [[ ${ROUTER_SSL_AUTOGENERATE:-0} != 1 ]]; then
		log "no TLS certificate at $cert and key at $key, and ROUTER_SSL_AUTOGENERATE is not 1"
		exit 1
	fi
	if [[ $domain =~ ^[0-9.]+$ || $domain == *:* ]]; then san="IP:$domain"; else san="DNS:$domain"; fi
	cert=/etc/nginx/selfsigned/carto.crt
	key=/etc/nginx/selfsigned/carto.key
	log "generating a self-signed certificate for $domain"
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$domain" \
		-addext "subjectAltName=$san" -keyout "$key" -out "$cert" 2>/dev/null
fi

# Redirects keep a non-standard published HTTPS port.
redirect_port=
if [[ -n ${ROUTER_HTTPS_PORT:-} && ${ROUTER_HTTPS_PORT} != 443 ]]; then
	redirect_port=":$ROUTER_HTTPS_PORT"
fi

routes() {
	local loc upstream
	while read -r loc upstream; do
		cat <<-CONF
		        location $loc {
		            set \$upstream http://$upstream;
		            proxy_pass \$upstream;
		        }
		CONF
	done <<-ROUTES
		/ workspace-www:3000
		/acc/ accounts-www:3000
		/workspace-api/ workspace-api:3000
		/api/v3/maps http-cache:6081
		/api/ maps-api:3000
		/imports/ import-api:3000
		/lds/ lds-api:3000
		/notifier/ notifier:3000
	ROUTES
}

health='location = /health { access_log off; default_type text/plain; return 200 "ok\n"; }'

{
	cat <<-CONF
	worker_processes 2;
	pid /run/nginx.pid;
	error_log stderr warn;
	events { worker_connections 1024; }
	http {
	    access_log /dev/stdout;
	    server_tokens off;
	    client_max_body_size 0;
	    resolver 127.0.0.11 valid=5s ipv6=off;
	    resolver_timeout 5s;
	    proxy_http_version 1.1;
	    proxy_set_header Host \$host;
	    proxy_set_header X-Real-IP \$remote_addr;
	    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
	    proxy_set_header X-Forwarded-Proto \$scheme;
	    proxy_set_header Upgrade \$http_upgrade;
	    proxy_set_header Connection \$connection_upgrade;
	    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
	    server {
	        listen 8080 default_server;
	        $health
	CONF
	if [[ $https == true ]]; then
		echo "        location / { return 301 https://\$host$redirect_port\$request_uri; }"
	else
		routes
	fi
	echo "    }"
	if [[ $https == true ]]; then
		cat <<-CONF
		    server {
		        listen 8443 ssl default_server;
		        ssl_certificate $cert;
		        ssl_certificate_key $key;
		        ssl_protocols TLSv1.2 TLSv1.3;
		        $health
		CONF
		routes
		echo "    }"
	fi
	echo "}"
} >/etc/nginx/nginx.conf

nginx -t -q
exec nginx -g 'daemon off;'
