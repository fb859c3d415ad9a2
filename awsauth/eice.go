package awsauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
	"github.com/coder/websocket"

	"github.com/airlockhq/airlock/config"
)

const (
	actionOpenTunnel = "ec2-instance-connect:OpenTunnel"
	actionDescribe   = "ec2:DescribeInstanceConnectEndpoints"
	// emptySHA256 is the payload hash of a request without a body, which
	// presigned URLs are signed with (as the AWS CLI and SDKs sign them).
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// presignExpiry is how long the OpenTunnel URL may be used to connect
	// (the AWS CLI's value); the tunnel itself lasts up to
	// maxTunnelDuration.
	presignExpiry = 60
	// maxTunnelDuration is the longest AWS lets a tunnel live (seconds):
	// an SSH session through an endpoint ends after an hour.
	maxTunnelDuration = 3600
)

// DialEICE opens a tunnel to the ec2-instance-connect resource res's
// address (its private IP and port) through its EC2 Instance Connect
// Endpoint: a websocket to the endpoint's openTunnel URL, presigned with
// SigV4, whose binary messages carry the TCP stream.
func (p *Provider) DialEICE(ctx context.Context, res *config.Resource) (net.Conn, error) {
	a := &res.Auth
	e := a.Endpoint
	if e == nil {
		return nil, fmt.Errorf("resource %s has no auth.endpoint", res.Name)
	}
	arn := fmt.Sprintf("arn:%s:ec2:%s:<account>:instance-connect-endpoint/%s", partition(a.Region), a.Region, e.ID)
	ip, port, err := net.SplitHostPort(res.Address)
	if err != nil {
		return nil, err
	}
	_, creds, err := p.credentials(ctx, a.Region, a.AssumeRoleARN, actionOpenTunnel)
	if err != nil {
		return nil, err
	}
	dns := e.DNSName
	if dns == "" {
		if dns, err = p.endpointDNS(ctx, res); err != nil {
			return nil, err
		}
	}
	q := url.Values{}
	q.Set("instanceConnectEndpointId", e.ID)
	q.Set("remotePort", port)
	q.Set("privateIpAddress", ip)
	q.Set("maxTunnelDuration", strconv.Itoa(maxTunnelDuration))
	q.Set("X-Amz-Expires", strconv.Itoa(presignExpiry))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "wss://"+dns+"/openTunnel?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("auth.endpoint.dns_name %q: %w", dns, err)
	}
	signed, _, err := v4.NewSigner().PresignHTTP(ctx, creds, req, emptySHA256, "ec2-instance-connect", a.Region, p.now().UTC())
	if err != nil {
		return nil, &Error{Action: actionOpenTunnel, Err: err, Msg: "cannot sign the EC2 Instance Connect Endpoint URL: " + err.Error()}
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: p.tlsConfig.Clone()}}
	ws, resp, err := websocket.Dial(ctx, signed, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		if isContextErr(ctx, err) {
			return nil, &Error{Action: actionOpenTunnel, Err: err, Msg: fmt.Sprintf("timed out opening a tunnel through EC2 Instance Connect Endpoint %s", e.ID)}
		}
		return nil, tunnelRefused(resp, err, arn, e.ID)
	}
	// The tunnel lives as long as the SSH connection over it, which closes
	// it; no request context bounds it.
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// tunnelRefused explains a failed openTunnel handshake.
func tunnelRefused(resp *http.Response, err error, arn, id string) *Error {
	if resp == nil {
		return &Error{Action: actionOpenTunnel, Err: err, Msg: fmt.Sprintf("cannot reach EC2 Instance Connect Endpoint %s: %v", id, rootCause(err))}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	detail := strings.TrimSpace(string(body))
	code := resp.Header.Get("X-Amzn-Errortype")
	if code == "" {
		code = http.StatusText(resp.StatusCode)
	}
	cause := &smithy.GenericAPIError{Code: code, Message: detail}
	switch resp.StatusCode {
	case http.StatusForbidden, http.StatusUnauthorized:
		e := classify(cause, actionOpenTunnel, arn)
		if e.Code != "AccessDenied" && e.Code != "AccessDeniedException" {
			e.Msg = fmt.Sprintf("EC2 Instance Connect Endpoint %s refused the tunnel (%d %s: %s): the gateway's identity needs %s on %s (docs/aws.md)",
				id, resp.StatusCode, code, detail, actionOpenTunnel, arn)
		}
		e.Err = fmt.Errorf("%w: %s", err, detail)
		return e
	case http.StatusTooManyRequests:
		e := classify(&smithy.GenericAPIError{Code: "ThrottlingException", Message: detail}, actionOpenTunnel, arn)
		e.Err = err
		return e
	}
	return &Error{Action: actionOpenTunnel, Code: code, Err: fmt.Errorf("%w: %s", err, detail), Msg: fmt.Sprintf(
		"EC2 Instance Connect Endpoint %s refused the tunnel: %d %s", id, resp.StatusCode, detail)}
}

// endpointDNS looks the endpoint's DNS name up once with
// DescribeInstanceConnectEndpoints (EC2's query API, signed with SigV4).
func (p *Provider) endpointDNS(ctx context.Context, res *config.Resource) (string, error) {
	a := &res.Auth
	id := a.Endpoint.ID
	p.mu.Lock()
	dns := p.eiceDNS[id]
	p.mu.Unlock()
	if dns != "" {
		return dns, nil
	}
	arn := fmt.Sprintf("arn:%s:ec2:%s:<account>:instance-connect-endpoint/%s", partition(a.Region), a.Region, id)
	_, creds, err := p.credentials(ctx, a.Region, a.AssumeRoleARN, actionDescribe)
	if err != nil {
		return "", err
	}
	endpoint := p.endpointURL
	if endpoint == "" {
		endpoint = "https://ec2." + a.Region + ".amazonaws.com"
		if partition(a.Region) == "aws-cn" {
			endpoint += ".cn"
		}
	}
	form := url.Values{}
	form.Set("Action", "DescribeInstanceConnectEndpoints")
	form.Set("Version", "2016-11-15")
	form.Set("InstanceConnectEndpointId.1", id)
	body := form.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "ec2", a.Region, p.now().UTC()); err != nil {
		return "", &Error{Action: actionDescribe, Err: err, Msg: "cannot sign " + actionDescribe + ": " + err.Error()}
	}
	resp, err := p.httpClient.Do(req)
	if err != nil {
		return "", classify(err, actionDescribe, arn)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", classify(err, actionDescribe, arn)
	}
	if resp.StatusCode != http.StatusOK {
		var er struct {
			Errors []struct {
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			} `xml:"Errors>Error"`
		}
		cause := &smithy.GenericAPIError{Code: http.StatusText(resp.StatusCode), Message: string(b)}
		if xml.Unmarshal(b, &er) == nil && len(er.Errors) > 0 {
			cause = &smithy.GenericAPIError{Code: er.Errors[0].Code, Message: er.Errors[0].Message}
		}
		e := classify(cause, actionDescribe, arn)
		if e.Code == "AccessDenied" || e.Code == "UnauthorizedOperation" {
			e.Msg += " (or set auth.endpoint.dns_name to skip the lookup)"
		}
		return "", e
	}
	var out struct {
		Items []struct {
			ID    string `xml:"instanceConnectEndpointId"`
			DNS   string `xml:"dnsName"`
			State string `xml:"state"`
		} `xml:"instanceConnectEndpointSet>item"`
	}
	if err := xml.Unmarshal(b, &out); err != nil {
		return "", &Error{Action: actionDescribe, Err: err, Msg: "unreadable answer to " + actionDescribe + ": " + err.Error()}
	}
	for _, it := range out.Items {
		if it.ID != id || it.DNS == "" {
			continue
		}
		switch it.State {
		case "create-complete", "update-in-progress", "update-complete", "update-failed":
		default:
			return "", &Error{Action: actionDescribe, Msg: fmt.Sprintf("EC2 Instance Connect Endpoint %s is %s, not available", id, it.State)}
		}
		p.mu.Lock()
		p.eiceDNS[id] = it.DNS
		p.mu.Unlock()
		return it.DNS, nil
	}
	return "", &Error{Action: actionDescribe, Msg: fmt.Sprintf("EC2 Instance Connect Endpoint %s was not found in %s: check auth.endpoint.id and auth.region", id, a.Region)}
}
