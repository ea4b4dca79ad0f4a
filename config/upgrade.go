package config

import (
	"net/url"
	"regexp"
)

// DefaultChannelURL is where CARTO's release channels are published.
const DefaultChannelURL = "https://releases.carto.com/self-hosted"

// DefaultChannel is the channel a node follows unless told otherwise.
const DefaultChannel = "stable"

// UpgradeConfig is appliance.yaml's upgrade section: where the node looks
// for newer CARTO releases.
type UpgradeConfig struct {
	// ChannelURL is the base URL the channels are published under (https,
	// no credentials); empty means DefaultChannelURL. A mirror inside the
	// customer's network goes here.
	ChannelURL string `yaml:"channel_url,omitempty"`
	// Channel is the channel followed (stable, …); empty means
	// DefaultChannel. The licence says which channels it entitles.
	Channel string `yaml:"channel,omitempty"`
}

// BaseURL is the channels' base URL in use.
func (c UpgradeConfig) BaseURL() string {
	if c.ChannelURL == "" {
		return DefaultChannelURL
	}
	return c.ChannelURL
}

// ChannelName is the channel in use.
func (c UpgradeConfig) ChannelName() string {
	if c.Channel == "" {
		return DefaultChannel
	}
	return c.Channel
}

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

func validateUpgrade(c UpgradeConfig) error {
	if c.ChannelURL != "" {
		u, err := url.Parse(c.ChannelURL)
		switch {
		case err != nil || u.Host == "" || u.Opaque != "":
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url: not a URL: give the https:// URL the channels are published under, e.g. %s", DefaultChannelURL)
		case u.User != nil:
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url %s: remove the user name and password from the URL: they would show in status and logs", RedactURL(u))
		case u.Scheme != "https":
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url %s: releases are fetched over https only: use https://%s%s", RedactURL(u), u.Host, u.EscapedPath())
		}
	}
	if c.Channel != "" && !channelName.MatchString(c.Channel) {
		return fieldErrorf("upgrade.channel", "appliance.yaml upgrade.channel %q: a channel name is lowercase letters, digits and '-', e.g. %s", c.Channel, DefaultChannel)
	}
	return nil
}
